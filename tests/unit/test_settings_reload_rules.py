"""The reload's pure parts: what changed, the digest (no secret in it), the CLI's glob check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_hoop.devstack.stack_policy import allow
from airflow_hoop.errors import ConfigError
from airflow_hoop.gateway.settings import GatewaySettings
from airflow_hoop.gateway.settings_reload import _changes, settings_digest
from airflow_hoop.ledger.canonical import canonical


def _settings(dsn: str = "host=x password=s3cret-one", dags: list[str] | None = None) -> Any:
    return GatewaySettings(
        database_dsn=dsn,
        vault={"url": "http://v", "auth": {"token": "root-s3cret"}, "identity_issuer": "i"},
        connections=[
            {"name": "w", "database": "d", "vault_role": "r", "allowed_dags": dags or ["a_*"]}
        ],
    )


def test_the_digest_holds_no_secret_and_follows_the_policy() -> None:
    one = _settings()
    dumped = canonical(one.model_dump(mode="json")).decode()
    assert "s3cret" not in dumped
    assert settings_digest(one) == settings_digest(_settings())
    assert settings_digest(one) != settings_digest(_settings(dags=["a_*", "b_*"]))


def test_changes_name_each_connection_and_field() -> None:
    old = [{"name": "w", "allowed_dags": ["a"]}, {"name": "gone"}]
    new = [{"name": "w", "allowed_dags": ["a", "b"]}, {"name": "new"}]
    assert list(_changes(old, new)) == [
        "connections.gone removed",
        "connections.new added",
        "connections.w.allowed_dags",
    ]


@pytest.mark.parametrize("glob", ["", "  ", "a b", "x\ny"])
def test_stack_allow_refuses_what_is_not_a_glob(glob: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a DAG id glob"):
        allow(tmp_path, glob)
