"""Checks from the Airflow side: a worker's (or triggerer's) ``hoop`` connection, and the API
server's ``[hoop]`` settings and keys."""

from __future__ import annotations

import httpx

from airflow_hoop.doctor.probes import failed, gateway_probe, issuer_probe, vault_probe
from airflow_hoop.errors import HoopError
from airflow_hoop.task.vault_config import StepVaultConfig
from airflow_hoop.wire.health import CheckResult
from airflow_hoop.wire.userinfo import UserInfo


def worker_checks(conn_id: str) -> list[CheckResult]:
    """The connection a step uses, the gateway and the Vault it names, the clocks."""
    from airflow_hoop.hooks.hoop import HoopHook

    try:
        config = HoopHook(conn_id).get_config()
    except HoopError as exc:
        return [failed("connection", exc)]
    identity = "a hoop.dev API key" if config.vault is None else f"Vault at {config.vault.url}"
    results = [
        CheckResult(
            name="connection",
            ok=True,
            detail=f"{conn_id}: gateway {config.gateway_url}, {identity}",
        )
    ]
    gateway, http = gateway_probe(config.gateway_url, config.ca_file)
    if http is not None:
        http.close()
    results += gateway
    if config.vault is not None:
        results += vault_probe(config.vault.url, config.vault.ca_file)
        results += _identity_checks(config.vault)
    return results


def _identity_checks(vault: StepVaultConfig) -> list[CheckResult]:
    if vault.identity == "trusted_workers":
        return [
            CheckResult(
                name="identity mode",
                ok=True,
                detail="trusted workers: each step's claims are asserted by its worker, so a "
                "DAG author could claim another DAG's identity (docs/identity.md)",
            )
        ]
    if not vault.issuer_url:
        return [
            CheckResult(
                name="identity issuer",
                ok=False,
                detail="identity airflow_issuer, but no issuer_url",
                fix="set issuer_url to <api-server>/hoop/issuer on the 'hoop' connection",
            )
        ]
    return issuer_probe(vault.issuer_url, vault.ca_file, vault.jwt_audience)


def api_server_checks() -> list[CheckResult]:
    """The plugin's ``[hoop]`` settings; the gateway; whether it accepts each key in its role."""
    from airflow_hoop.plugins.settings import PluginSettings

    settings = PluginSettings.from_airflow()
    missing = [
        name
        for name in ("gateway_url", "approver_api_key", "auditor_api_key")
        if getattr(settings, name) is None
    ]
    if missing:
        return [
            CheckResult(
                name="[hoop] settings",
                ok=False,
                detail=f"missing on this API server: {', '.join(missing)}",
                fix="set them in airflow.cfg or as AIRFLOW__HOOP__<NAME> on the API server only "
                "(docs/operations.md)",
            )
        ]
    assert settings.gateway_url is not None  # for mypy: checked above
    results = [CheckResult(name="[hoop] settings", ok=True, detail="gateway URL and both keys set")]
    probed, http = gateway_probe(settings.gateway_url, settings.ca_file)
    results += probed
    if http is None:
        return results
    try:
        for role, key in (
            ("approver", settings.approver_api_key),
            ("auditor", settings.auditor_api_key),
        ):
            assert key is not None
            answer = http.get(
                "/api/userinfo", headers={"Authorization": f"Bearer {key.get_secret_value()}"}
            )
            results.append(_key_check(role, answer))
    finally:
        http.close()
    return results


def _key_check(role: str, answer: httpx.Response) -> CheckResult:
    name = f"{role} key"
    fix = f"add its SHA-256 to the gateway's api_keys with role {role}" + (
        " and asserts_users: true (the plugin names who decided)" if role == "approver" else ""
    )
    if answer.status_code != 200:
        why = (
            "not known to the gateway"
            if answer.status_code == 401
            else f"HTTP {answer.status_code}"
        )
        return CheckResult(name=name, ok=False, detail=f"[hoop] {role}_api_key: {why}", fix=fix)
    who = UserInfo.model_validate_json(answer.content)
    problems = []
    if who.role not in (role, "admin"):
        problems.append(f"its role is {who.role}, not {role}")
    if role == "approver" and not who.asserts_users:
        problems.append("it may not name the deciding user (asserts_users is off)")
    if problems:
        return CheckResult(
            name=name, ok=False, detail=f"key {who.name}: " + "; ".join(problems), fix=fix
        )
    groups = f", groups {', '.join(who.groups)}" if who.groups else ""
    return CheckResult(name=name, ok=True, detail=f"key {who.name}: role {who.role}{groups}")
