"""The plugin's FastAPI app, mounted by the Airflow API server under ``/hoop``.

Built on first use only: plugin modules are imported in every task process, and those never
serve HTTP. Feature routers (approvals, audit) are included here; they import ``common.py``,
never this module.
"""

from __future__ import annotations

import functools
from typing import Any

from airflow_hoop.plugins.common import APPROVALS_PREFIX, AUDIT_PREFIX, ISSUER_PREFIX, URL_PREFIX

#: The "Approvals" tab of task instances and the top-level "Approvals" page (airflow-3.md §2.4).
APPROVAL_VIEWS = [
    {
        "name": "Approvals",
        "href": APPROVALS_PREFIX + "/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}",
        "destination": "task_instance",
        "url_route": "hoop-approvals-ti",
    },
    {
        "name": "Approvals",
        "href": APPROVALS_PREFIX + "/",
        "destination": "nav",
        "url_route": "hoop-approvals",
        "nav_top_level": True,
    },
]

#: The "Audit" tab of task instances, DAG runs and DAGs, and the top-level "Audit" page.
AUDIT_VIEWS = [
    {
        "name": "Audit",
        "href": AUDIT_PREFIX + "/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}",
        "destination": "task_instance",
        "url_route": "hoop-audit-ti",
    },
    {
        "name": "Audit",
        "href": AUDIT_PREFIX + "/run/{DAG_ID}/{RUN_ID}",
        "destination": "dag_run",
        "url_route": "hoop-audit-run",
    },
    {
        "name": "Audit",
        "href": AUDIT_PREFIX + "/dag/{DAG_ID}",
        "destination": "dag",
        "url_route": "hoop-audit-dag",
    },
    {
        "name": "Audit",
        "href": AUDIT_PREFIX + "/",
        "destination": "nav",
        "url_route": "hoop-audit",
        "nav_top_level": True,
    },
]


@functools.cache
def build_app() -> Any:
    """The FastAPI app (cached: one per process)."""
    from fastapi import FastAPI

    from airflow_hoop.plugins.approvals import router as approvals_router
    from airflow_hoop.plugins.audit.download import router as download_router
    from airflow_hoop.plugins.audit.routes import router as audit_router

    app = FastAPI(title="airflow-hoop", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(approvals_router)
    app.include_router(audit_router)
    app.include_router(download_router)
    _mount_issuer(app)
    return app


def _mount_issuer(app: Any) -> None:
    """The step identity issuer under ``/hoop/issuer``, when the API server is given its
    settings (``AIRFLOW_HOOP_ISSUER_SETTINGS``); it reads Airflow's own metadata database."""
    import os

    from airflow_hoop.plugins.issuer.settings import SETTINGS_ENV, IssuerSettings

    path = os.environ.get(SETTINGS_ENV)
    if not path:
        return
    from airflow.configuration import conf

    from airflow_hoop.plugins.issuer.app import build_issuer_app

    settings = IssuerSettings.load(path)
    url = settings.metadata_db_url or conf.get("database", "sql_alchemy_conn")
    app.mount(ISSUER_PREFIX.removeprefix(URL_PREFIX), build_issuer_app(settings, url))


class LazyFastAPIApps:
    """``fastapi_apps`` of the plugin, built when the API server first reads the attribute."""

    def __get__(self, instance: object, owner: type | None = None) -> list[dict[str, Any]]:
        return [{"app": build_app(), "url_prefix": URL_PREFIX, "name": "airflow-hoop"}]
