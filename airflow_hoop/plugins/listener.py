"""Ends governed steps when a task ends, whatever operator ran them.

The stock ``SQLExecuteQueryOperator`` pointed at a ``hoop_postgres`` connection knows nothing
of steps; this listener, loaded in every task process, ends them on success, failure or skip.
Kept light: Airflow imports plugin modules in every task process.
"""

from __future__ import annotations

import sys
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

from airflow_hoop.plugins.app import APPROVAL_VIEWS, AUDIT_VIEWS, DASHBOARD_VIEWS, LazyFastAPIApps


class _StepListener:
    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        _end()

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        _end()

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        _end()


def _end() -> None:
    # Every task process ends here, governed or not. A step exists only once step_session has
    # been imported (by the task's first governed call): without it there is nothing to end,
    # and importing it (Vault client, gateway client) would only cost the task its time.
    step_session = sys.modules.get("airflow_hoop.task.step_session")
    if step_session is not None:
        step_session.end_all_steps()


class HoopListenerPlugin(AirflowPlugin):
    """airflow-hoop's one plugin: the step listener, and the UI (Approvals and Audit tabs, pages).

    The FastAPI app is built only when the API server reads ``fastapi_apps``.
    """

    name = "airflow_hoop"
    listeners = [_StepListener()]
    fastapi_apps = LazyFastAPIApps()  # type: ignore[assignment]
    react_apps = [*APPROVAL_VIEWS, *AUDIT_VIEWS, *DASHBOARD_VIEWS]
