"""``airflow-hoop doctor`` on the embedded stack: each component's checks pass where the stack
is right, and each real fault (Vault down, an unknown key, a gateway role that could rewrite
the ledger) fails its own check with a fix, never another's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from support.gateway_support import free_port

from airflow_hoop.cli.main import main
from airflow_hoop.devstack.models import StackInfo


def _doctor(*args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = CliRunner().invoke(main, ["doctor", *args, "--json"], catch_exceptions=False)
    checks = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    return result.exit_code, {c["name"]: c for c in checks}


def _env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def test_worker_checks_pass_and_a_dead_vault_is_named(
    stack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, stack.airflow_env())
    code, checks = _doctor("worker")
    assert code == 0, checks
    assert {"connection", "gateway reachable", "gateway ready", "vault reachable"} <= set(checks)
    assert checks["identity issuer"]["ok"] and "key" in checks["identity issuer"]["detail"]
    assert "plain HTTP on loopback" in checks["gateway transport"]["detail"]

    hoop = json.loads(stack.airflow_env()["AIRFLOW_CONN_HOOP_DEFAULT"])
    hoop["extra"]["vault_url"] = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_HOOP_DEFAULT", json.dumps(hoop))
    code, checks = _doctor("worker")
    assert code == 1
    failing = {name for name, c in checks.items() if not c["ok"]}
    assert failing == {"vault reachable"}, checks
    assert "vault_url" in checks["vault reachable"]["fix"]


def test_worker_with_a_broken_connection_fails_on_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_HOOP_BROKEN", json.dumps({"conn_type": "hoop"}))
    code, checks = _doctor("worker", "--conn-id", "hoop_broken")
    assert code == 1 and list(checks) == ["connection"], checks
    assert "host" in checks["connection"]["fix"]


def test_api_server_keys_are_checked_in_their_roles(
    stack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.approver_api_key is not None
    _env(
        monkeypatch,
        {
            "AIRFLOW__HOOP__GATEWAY_URL": stack.gateway_url,
            "AIRFLOW__HOOP__APPROVER_API_KEY": stack.approver_api_key,
            "AIRFLOW__HOOP__AUDITOR_API_KEY": stack.auditor_api_key,
        },
    )
    code, checks = _doctor("api-server")
    assert code == 0, checks
    # The keys swapped: each is known, but not in the other's role.
    monkeypatch.setenv("AIRFLOW__HOOP__APPROVER_API_KEY", stack.auditor_api_key)
    monkeypatch.setenv("AIRFLOW__HOOP__AUDITOR_API_KEY", "hpk_" + "0" * 40)
    code, checks = _doctor("api-server")
    assert code == 1
    assert not checks["approver key"]["ok"], checks
    assert "not approver" in checks["approver key"]["detail"], checks
    assert "not known" in checks["auditor key"]["detail"], checks
    assert stack.auditor_api_key not in json.dumps(checks)  # no key in the output

    monkeypatch.delenv("AIRFLOW__HOOP__AUDITOR_API_KEY")
    code, checks = _doctor("api-server")
    assert code == 1 and "auditor_api_key" in checks["[hoop] settings"]["detail"]


def test_gateway_checks_and_a_role_that_could_rewrite_the_ledger(
    stack: StackInfo, tmp_path: Path
) -> None:
    code, checks = _doctor("gateway", "--config", stack.gateway_settings_path)
    assert code == 0, checks
    assert "insert-only" in checks["database role"]["detail"]

    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    settings["database_dsn"] = stack.admin_dsn(stack.gateway_db)
    superuser = tmp_path / "gateway-superuser.yaml"
    superuser.write_text(yaml.safe_dump(settings))
    superuser.chmod(0o600)
    code, checks = _doctor("gateway", "--config", str(superuser))
    assert code == 1
    failing = {name for name, c in checks.items() if not c["ok"]}
    assert failing == {"database role"}, checks
    assert "rewrite" in checks["database role"]["detail"]
