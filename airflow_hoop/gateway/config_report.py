"""What a gateway settings file configures, in words: ``airflow-hoop gateway check-config``.

Never prints a secret: the database DSN, Vault token or secret_id and API key digests are
reported as set or not, nothing more.
"""

from __future__ import annotations

import os

from airflow_hoop.gateway.execution.runners.sandbox import shell_unavailable
from airflow_hoop.gateway.settings import GatewaySettings, ShellConnection
from airflow_hoop.gateway.targets import as_target

ENV_PREFIX = "HOOP_GATEWAY_"


def describe(settings: GatewaySettings) -> list[str]:
    """One line per fact the operator should check before starting the gateway."""
    vault = settings.vault
    lines = [
        f"listen: {settings.host}:{settings.port}, " + _tls(settings),
        "database_dsn: set (not shown)",
        f"vault: {vault.url}"
        + (f" namespace {vault.namespace}" if vault.namespace else "")
        + f", gateway logs in with {vault.auth.method}",
        f"identity tokens: issuer {vault.identity_issuer}, audience {vault.identity_audience}",
        f"connections ({len(settings.connections)}):",
    ]
    for conn in settings.connections:
        lines.append(f"  {conn.name}: {as_target(conn, settings).describe()}")
        why = shell_unavailable(conn) if isinstance(conn, ShellConnection) else None
        if why is not None:
            lines.append(f"    warning: the gateway will refuse this connection here: {why}")
        allowed = ", ".join(conn.allowed_dags) or "nobody (deny all)"
        lines.append(f"    allowed DAGs: {allowed}")
        for rule in conn.approvals:
            name = rule.name or "unnamed"
            lines.append(
                f"    approval {name}: {rule.required_for} of DAGs {', '.join(rule.dags)} need "
                f"approval by {rule.describe()}"
            )
    lines.append(f"api keys ({len(settings.api_keys)}):")
    for key in settings.api_keys:
        groups = f", groups {', '.join(key.groups)}" if key.groups else ""
        lines.append(f"  {key.name}: {key.role}{groups}")
    siem = settings.siem_stream
    if siem is not None and siem.enabled:
        lines.append(
            f"siem stream: {siem.format.kind} to {siem.sink.kind}, cursor {siem.cursor_file}"
        )
    if vault.auth.method == "token":
        lines.append(
            "warning: vault.auth.method 'token' is for development; use approle or kubernetes"
        )
    overrides = sorted(k for k in os.environ if k.upper().startswith(ENV_PREFIX))
    overrides = [k for k in overrides if k.upper() != f"{ENV_PREFIX}CONFIG"]
    if overrides:
        lines.append(f"overridden by the environment: {', '.join(overrides)}")
    return lines


def _tls(settings: GatewaySettings) -> str:
    tls = settings.tls
    if tls is None:
        return "plain HTTP (put TLS in front of it or set tls.cert_file/tls.key_file)"
    client = ""
    if tls.client_ca_file:
        client = ", client certificates " + ("required" if tls.require_client_cert else "optional")
    return f"HTTPS with {tls.cert_file}{client}"
