"""A ``required_for: writes`` rule needs a READ user: the settings refuse it without one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airflow_hoop.gateway.execution.runners.read_only import split_statements
from airflow_hoop.gateway.settings import PostgresConnection

RULE = {"name": "writes", "required_for": "writes", "groups": ["owners"]}


def test_a_writes_rule_without_a_read_role_is_refused_naming_the_fix() -> None:
    with pytest.raises(ValidationError) as err:
        PostgresConnection(name="wh", database="wh", vault_role="rw", approvals=[RULE])
    assert "vault_read_role" in str(err.value) and "SELECT/USAGE" in str(err.value)


def test_a_writes_rule_with_a_read_role_and_other_rules_are_accepted() -> None:
    conn = PostgresConnection(
        name="wh", database="wh", vault_role="rw", vault_read_role="ro", approvals=[RULE]
    )
    assert conn.vault_read_role == "ro"
    every = {**RULE, "required_for": "all"}
    assert PostgresConnection(name="wh", database="wh", vault_role="rw", approvals=[every])


def test_statements_are_split_by_postgres_own_parser() -> None:
    assert split_statements("SELECT $$a;b$$; COMMIT; INSERT INTO t VALUES (1)") == [
        "SELECT $$a;b$$",
        "COMMIT",
        "INSERT INTO t VALUES (1)",
    ]
    # Unparsable: sent whole, and the server (extended protocol) refuses it.
    assert split_statements("SELECT 1; SELEC 2") == ["SELECT 1; SELEC 2"]
