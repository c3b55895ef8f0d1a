"""The plugin's FastAPI app, mounted by the Airflow API server under ``/hoop``.

Built on first use only: plugin modules are imported in every task process, and those never
serve HTTP. Feature routers (approvals, audit) are included here; they import ``common.py``,
never this module.
"""

from __future__ import annotations

import functools
from typing import Any

from airflow_hoop.plugins.common import ISSUER_PREFIX, URL_PREFIX

_BUNDLE = URL_PREFIX + "/ui/static/hoop-ui.js"


def _icons(name: str) -> dict[str, str]:
    return {
        "icon": f"{URL_PREFIX}/ui/static/{name}.svg",
        "icon_dark_mode": f"{URL_PREFIX}/ui/static/{name}-dark.svg",
    }


def _app(name: str, destination: str, url_route: str, icon: str, **extra: Any) -> dict[str, Any]:
    # Every entry loads the same ES module (ui/, built into plugins/static); the bundle sets
    # globalThis[name] for each name, and picks the view from the route's props.
    return {
        "name": name,
        "bundle_url": _BUNDLE,
        "destination": destination,
        "url_route": url_route,
        **_icons(icon),
        **extra,
    }


#: React views rendered in-page by Airflow's UI (airflow-3.md §2.4-2.5): Approvals (task
#: instance tab, top-level page), "Access audit" (task instance, run and DAG tabs, top-level
#: search; not Airflow's own "Audit Log"), and the home page's "Governed access" widget.
APPROVAL_VIEWS = [
    _app("Approvals", "task_instance", "hoop-approvals-ti", "approvals"),
    _app("Approvals", "nav", "hoop-approvals", "approvals", nav_top_level=True),
]
AUDIT_VIEWS = [
    _app("Access audit", "task_instance", "hoop-access-audit-ti", "audit"),
    _app("Access audit", "dag_run", "hoop-access-audit-run", "audit"),
    _app("Access audit", "dag", "hoop-access-audit-dag", "audit"),
    _app("Access audit", "nav", "hoop-access-audit", "audit", nav_top_level=True),
]
DASHBOARD_VIEWS = [_app("Governed access", "dashboard", "hoop-dashboard", "approvals")]


@functools.cache
def build_app() -> Any:
    """The FastAPI app (cached: one per process)."""
    from fastapi import FastAPI

    from airflow_hoop.plugins.approvals import router as approvals_router
    from airflow_hoop.plugins.audit.download import router as download_router
    from airflow_hoop.plugins.audit.routes import router as audit_router
    from airflow_hoop.plugins.ui_api import router as ui_router
    from airflow_hoop.plugins.ui_api_approvals import router as ui_approvals_router

    app = FastAPI(title="airflow-hoop", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(approvals_router)
    app.include_router(audit_router)
    app.include_router(download_router)
    app.include_router(ui_router)
    app.include_router(ui_approvals_router)
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
