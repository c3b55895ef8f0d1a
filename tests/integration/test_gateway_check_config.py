"""``airflow-hoop gateway check-config FILE``: validate without starting, name the wrong keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from airflow_hoop.cli.main import main
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.gateway.settings import ApiKey

DSN_PASSWORD = "dsn-secret-pw"
SECRET_ID = "approle-secret-id-value"
KEY = "hpk_auditorKeyCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"


def _settings(**overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "database_dsn": f"host=db.internal dbname=hoop_gateway user=gw password={DSN_PASSWORD}",
        "vault": {
            "url": "https://vault.internal:8200",
            "namespace": "data-platform",
            "auth": {"method": "approle", "role_id": "gw-role", "secret_id": SECRET_ID},
            "identity_issuer": "https://vault.internal:8200/v1/identity/oidc",
        },
        "connections": [
            {
                "name": "warehouse",
                "host": "pg.internal",
                "database": "warehouse",
                "vault_role": "warehouse-step",
                "vault_read_role": "warehouse-step-ro",
                "allowed_dags": ["etl_*"],
                "approvals": [{"name": "writes", "dags": ["payroll_*"], "groups": ["owners"]}],
            },
            {"name": "ops_shell", "type": "custom", "command": ["/bin/bash"]},
        ],
        "api_keys": [
            {"name": "auditors", "sha256": ApiKey.digest(KEY), "role": "auditor"},
            {"name": "airflow-ui", "sha256": "0" * 64, "role": "approver", "groups": ["owners"]},
        ],
    }
    settings.update(overrides)
    return settings


def _check(tmp_path: Path, content: str | dict[str, Any]) -> tuple[int, str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    result = CliRunner().invoke(main, ["gateway", "check-config", str(path)])
    return result.exit_code, result.output


@pytest.fixture(autouse=True)
def _no_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [k for k in os.environ if k.startswith("HOOP_GATEWAY_")]:
        monkeypatch.delenv(name)


def test_valid_file_prints_what_the_gateway_would_run_with(tmp_path: Path) -> None:
    code, out = _check(tmp_path, _settings())
    assert code == 0, out
    assert "valid" in out
    assert (
        "https://vault.internal:8200 namespace data-platform, gateway logs in with approle" in out
    )
    assert "warehouse: postgres pg.internal:5432/warehouse" in out
    assert "allowed DAGs: etl_*" in out
    assert "approval writes: writes of DAGs payroll_* need approval by any of owners" in out
    assert "ops_shell: custom command /bin/bash" in out
    assert "allowed DAGs: nobody (deny all)" in out
    assert "auditors: auditor" in out and "airflow-ui: approver, groups owners" in out
    for secret in (DSN_PASSWORD, SECRET_ID, ApiKey.digest(KEY), KEY):
        assert secret not in out


@pytest.mark.parametrize(
    ("change", "keys"),
    [
        (lambda s: s["vault"].pop("url"), ["vault.url"]),
        (lambda s: s["vault"]["auth"].pop("secret_id"), ["vault.auth", "secret_id"]),
        (lambda s: s["connections"][0].pop("database"), ["connections.0.postgres.database"]),
        (
            lambda s: s["connections"].append(s["connections"][0]),
            ["connection names must be unique"],
        ),
        (lambda s: s["api_keys"][0].update(sha256="not-hex"), ["api_keys.0.sha256"]),
        (lambda s: s.update(prot=8009), ["prot"]),
    ],
)
def test_invalid_file_exits_1_naming_the_key(tmp_path: Path, change: Any, keys: list[str]) -> None:
    settings = _settings()
    change(settings)
    code, out = _check(tmp_path, settings)
    assert code == 1, out
    assert "[configuration] invalid gateway settings" in out
    for key in keys:
        assert key in out
    assert DSN_PASSWORD not in out and SECRET_ID not in out


def test_a_shell_sibling_of_a_masked_connection_is_named_with_the_fix(tmp_path: Path) -> None:
    settings = _settings()
    warehouse, shell = settings["connections"]
    warehouse["masking"] = {"name": "pii", "detectors": ["email"]}
    shell["database"] = "warehouse"
    code, out = _check(tmp_path, settings)
    assert code == 1, out
    assert (
        "connection 'ops_shell' reaches database warehouse@pg.internal:5432 which connection "
        "'warehouse' masks (policy 'pii'); give 'ops_shell' a masking policy with at least the "
        "detectors ['email'] or point it elsewhere"
    ) in " ".join(out.split())
    shell["masking"] = {"name": "shell-pii", "detectors": ["email"]}
    code, out = _check(tmp_path, settings)
    assert code == 0, out


def test_yaml_error_exits_1_and_missing_file_exits_2(tmp_path: Path) -> None:
    code, out = _check(tmp_path, "vault: [unclosed\n")
    assert code == 1 and "cannot read gateway settings file" in out
    missing = CliRunner().invoke(main, ["gateway", "check-config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_environment_overrides_are_validated_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOP_GATEWAY_PORT", "9443")
    code, out = _check(tmp_path, _settings())
    assert code == 0, out
    assert "listen: 127.0.0.1:9443" in out and "environment: HOOP_GATEWAY_PORT" in out
    monkeypatch.setenv("HOOP_GATEWAY_PORT", "not-a-port")
    code, out = _check(tmp_path, _settings())
    assert code == 1 and "port" in out


def test_the_embedded_stacks_settings_file_is_valid(stack: StackInfo) -> None:
    result = CliRunner().invoke(main, ["gateway", "check-config", stack.gateway_settings_path])
    assert result.exit_code == 0, result.output
    assert "gateway logs in with token" in result.output
    assert "warehouse: postgres" in result.output and "devstack-auditor: auditor" in result.output
    assert stack.auditor_api_key not in result.output
