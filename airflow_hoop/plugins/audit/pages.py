"""What every Audit page does: render a template with the pages' headers, reach the gateway
with the plugin's auditor key, check that the user may read a DAG's task instances, and turn a
gateway error into a readable page. Used by the pages (``routes.py``) and the export download
(``download.py``).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from fastapi.responses import HTMLResponse

from airflow_hoop.client.audit_views import AuditViewsClient
from airflow_hoop.errors import (
    ConfigError,
    GatewayAuthError,
    GatewayUnavailableError,
    HoopError,
    PolicyRefusedError,
)
from airflow_hoop.plugins.common import AUDIT_PREFIX, templates
from airflow_hoop.plugins.settings import PluginSettings

PREFIX = AUDIT_PREFIX
_HEADERS = {
    "Cache-Control": "no-store",
    # No inline script at all: even a value that escaped escaping could not run.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
}


def render(name: str, started: float, status_code: int = 200, **values: Any) -> HTMLResponse:
    html = templates().get_template(name).render(prefix=PREFIX, quote=quote, **values)
    headers = {**_HEADERS, "Server-Timing": f"app;dur={(time.perf_counter() - started) * 1e3:.1f}"}
    return HTMLResponse(html, status_code=status_code, headers=headers)


def client() -> AuditViewsClient:
    settings = PluginSettings.from_airflow()
    url, key = settings.gateway_with(settings.auditor_api_key, views="Audit pages", role="auditor")
    return AuditViewsClient(url, key, timeout=30.0, ca_file=settings.ca_file)


def may_read(user: Any, dag_id: str | None) -> bool:
    """GET on the DAG's task instances (``dag_id`` None: on every DAG).

    The DAG's team is looked up as Airflow's own ``requires_access_dag`` does, so that a
    multi-team deployment restricts these pages exactly as it restricts Airflow's.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dag import DagModel

    details = (
        None if dag_id is None else DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))
    )
    return bool(
        get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.TASK_INSTANCE, details=details, user=user
        )
    )


def gateway_error(exc: HoopError, started: float) -> HTMLResponse:
    """Readable empty states for a gateway that is down, misconfigured or refuses the key."""
    status, fix = 502, exc.fix
    if isinstance(exc, GatewayUnavailableError):
        message = f"The gateway is unreachable: {exc.what}."
    elif isinstance(exc, ConfigError):
        status, message = 503, f"Not configured: {exc.what}."
    elif isinstance(exc, GatewayAuthError | PolicyRefusedError):
        status = 503
        message = f"The gateway refused the plugin's auditor key: {exc.what}."
        fix = "Give the API server an API key with role auditor ([hoop] auditor_api_key)."
    else:
        message = str(exc)
    return render("audit_error.html", started, status_code=status, message=message, fix=fix)
