"""Checks on the gateway's host: its settings file, its database role, its Vault login and
transit key, its shell sandboxes."""

from __future__ import annotations

import asyncio

import psycopg

from airflow_hoop.doctor.probes import failed, vault_probe
from airflow_hoop.errors import HoopError
from airflow_hoop.wire.health import CheckResult

#: What would let the gateway's role rewrite history: any of these on the ledger.
_REWRITE = ("UPDATE", "DELETE", "TRUNCATE")


def gateway_checks(config: str | None) -> list[CheckResult]:
    """The settings validate; the database role is insert-only; Vault logs in and signs."""
    from airflow_hoop.gateway.settings import GatewaySettings, ShellConnection

    try:
        settings = GatewaySettings.load(config)
    except HoopError as exc:
        return [failed("settings", exc)]
    results = [CheckResult(name="settings", ok=True, detail=f"{config or 'environment'}: valid")]
    results.append(_database_check(settings.database_dsn.get_secret_value()))
    results += vault_probe(settings.vault.url, None)
    results.append(asyncio.run(_vault_login_check(settings)))
    from airflow_hoop.gateway.execution.runners.sandbox import shell_unavailable

    for conn in settings.connections:
        if isinstance(conn, ShellConnection):
            why = shell_unavailable(conn)
            results.append(
                CheckResult(
                    name=f"shell {conn.name}",
                    ok=why is None,
                    detail=why or "its sandbox starts on this host",
                    fix=""
                    if why is None
                    else "install bubblewrap and allow unprivileged user "
                    "namespaces, or set sandbox: none knowingly (docs/shell.md)",
                )
            )
    return results


def _database_check(dsn: str) -> CheckResult:
    name = "database role"
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT to_regclass('ledger') IS NOT NULL,"
                " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), current_user"
            ).fetchone()
            assert row is not None
            has_ledger, superuser, user = row
            rewrite = (
                [
                    p
                    for p in _REWRITE
                    if conn.execute("SELECT has_table_privilege('ledger', %s)", (p,)).fetchone()
                    == (True,)
                ]
                if has_ledger
                else []
            )
    except psycopg.Error as exc:
        return CheckResult(
            name=name,
            ok=False,
            detail=f"cannot connect with database_dsn ({type(exc).__name__})",
            fix="check the gateway database runs and database_dsn (host, user, password)",
        )
    if not has_ledger:
        return CheckResult(
            name=name,
            ok=False,
            detail=f"role {user}: no ledger table in this database",
            fix="create the gateway schema (devstack/database_setup.py; docs/deploy.md)",
        )
    if superuser or rewrite:
        what = "is a superuser" if superuser else f"may {'/'.join(rewrite)} the ledger"
        return CheckResult(
            name=name,
            ok=False,
            detail=f"role {user} {what}: it could rewrite the record it keeps",
            fix="run the gateway as the insert-only role the schema setup creates (SELECT and "
            "INSERT on the ledger only)",
        )
    return CheckResult(name=name, ok=True, detail=f"role {user}: insert-only on the ledger")


async def _vault_login_check(settings: object) -> CheckResult:
    from airflow_hoop.gateway.settings import GatewaySettings
    from airflow_hoop.gateway.vault import GatewayVaultClient

    assert isinstance(settings, GatewaySettings)
    vault = GatewayVaultClient(settings.vault, timeout=settings.vault_timeout_seconds)
    try:
        await vault.login()
        await vault.own_token_ttl()
        keys = await vault.checkpoint_public_keys()
    except HoopError as exc:
        return failed("vault login and transit key", exc)
    finally:
        vault.close()
    return CheckResult(
        name="vault login and transit key",
        ok=True,
        detail=f"logged in ({settings.vault.auth.method}); checkpoint key "
        f"{settings.vault.checkpoint_key!r} has {len(keys)} version(s)",
    )
