"""A connection that reaches a masked database must not show what its sibling masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_hoop.devstack import stack as devstack
from airflow_hoop.errors import ConfigError
from airflow_hoop.gateway.settings import GatewaySettings

PII = {
    "name": "pii",
    "columns": [{"name": "mail", "columns": ["email"], "method": "hash"}],
    "detectors": ["email", "payment_card"],
    "custom": [{"name": "order_ref", "regex": "ORD-[0-9]{6}"}],
}


def _warehouse(name: str = "warehouse", **extra: Any) -> dict[str, Any]:
    conn = {
        "name": name,
        "host": "127.0.0.1",
        "port": 5432,
        "database": "warehouse",
        "vault_role": "step",
        "allowed_dags": ["*"],
        "masking": PII,
    }
    conn.update(extra)
    return {k: v for k, v in conn.items() if v is not None}


def _shell(masking: dict[str, Any] | None = None, database: str = "warehouse") -> dict[str, Any]:
    conn = {"name": "ops_shell", "type": "custom", "database": database, "allowed_dags": ["*"]}
    return {**conn, "masking": masking} if masking else conn


def _load(tmp_path: Path, *connections: dict[str, Any]) -> GatewaySettings:
    data = {
        "database_dsn": "host=x",
        "vault": {
            "url": "http://127.0.0.1:1",
            "auth": {"token": "t"},
            "identity_issuer": "http://127.0.0.1:1/v1/identity/oidc",
        },
        "connections": list(connections),
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return GatewaySettings.load(path)


def test_an_unmasked_shell_on_a_masked_database_is_refused_naming_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, _warehouse(), _shell())
    message = str(err.value)
    assert (
        "connection 'ops_shell' reaches database warehouse@127.0.0.1:5432 which connection "
        "'warehouse' masks (policy 'pii'); give 'ops_shell' a masking policy with at least the "
        "detectors ['email', 'payment_card'] and the custom detectors ['order_ref'] or point it "
        "elsewhere"
    ) in message


@pytest.mark.parametrize(
    "masking",
    [
        {"name": "few", "detectors": ["email"], "custom": PII["custom"]},
        {"name": "no-custom", "detectors": ["all"]},
        # The same name with another expression does not mask the same values.
        {
            "name": "other-regex",
            "detectors": ["all"],
            "custom": [{"name": "order_ref", "regex": "ORD-[0-9]{5}"}],
        },
    ],
)
def test_a_shell_policy_missing_a_detector_is_refused(
    tmp_path: Path, masking: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError, match="'ops_shell' reaches database warehouse"):
        _load(tmp_path, _warehouse(), _shell(masking))


def test_a_shell_with_the_policy_detectors_is_accepted(tmp_path: Path) -> None:
    masking = {"name": "shell", "detectors": ["all"], "custom": PII["custom"]}
    settings = _load(tmp_path, _warehouse(), _shell(masking))
    assert [c.name for c in settings.connections] == ["warehouse", "ops_shell"]


def test_the_sibling_is_found_through_another_connection_to_the_same_database(
    tmp_path: Path,
) -> None:
    """The shell's database: names an unmasked connection, on a localhost spelling."""
    plain = _warehouse("plain", masking=None, vault_role="reader", host="localhost")
    with pytest.raises(ConfigError, match="'ops_shell' reaches database warehouse@localhost"):
        _load(tmp_path, _warehouse(), plain, _shell(database="plain"))


def test_a_column_only_policy_cannot_be_kept_by_a_shell(tmp_path: Path) -> None:
    columns_only = {"name": "cols", "columns": PII["columns"]}
    with pytest.raises(ConfigError, match="masks columns only"):
        _load(
            tmp_path, _warehouse(masking=columns_only), _shell({"name": "s", "detectors": ["all"]})
        )


def test_an_unmasked_sql_sibling_with_the_same_role_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, _warehouse(), _warehouse("raw", masking=None))
    assert (
        "connection 'raw' reaches database warehouse@127.0.0.1:5432 with Vault role 'step' "
        "unmasked, which connection 'warehouse' masks (policy 'pii')" in str(err.value)
    )


@pytest.mark.parametrize(
    "other",
    [
        _warehouse("raw", masking=None, vault_role="owner"),  # its own role: its own grants
        _warehouse("raw", masking=None, database="staging"),
        _warehouse("raw", masking=None, port=5433),
        _warehouse("raw", masking={"name": "lenient", "detectors": ["email"]}),
    ],
)
def test_other_databases_roles_and_masked_siblings_are_accepted(
    tmp_path: Path, other: dict[str, Any]
) -> None:
    _load(
        tmp_path,
        _warehouse(),
        other,
        _shell({"name": "s", "detectors": ["all"], "custom": PII["custom"]}),
    )


def test_a_shell_without_a_database_is_not_a_sibling(tmp_path: Path) -> None:
    conn = {"name": "ops_shell", "type": "custom", "allowed_dags": ["*"]}
    _load(tmp_path, _warehouse(), conn)


def test_the_embedded_stack_settings_pass(tmp_path: Path) -> None:
    """The stack's own ops_shell carries the warehouse policy's detectors."""
    shell = devstack.shell_connection()
    warehouse = _warehouse(masking=devstack.WAREHOUSE_MASKING)
    _load(tmp_path, warehouse, {**shell, "database": "warehouse"})
    with pytest.raises(ConfigError, match="'ops_shell' reaches"):
        _load(tmp_path, warehouse, {**shell, "masking": None, "database": "warehouse"})
