"""One real Airflow (api-server, scheduler, dag-processor, triggerer) for the approval tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_hoop.devstack.airflow_services import AirflowServices, running_airflow
from airflow_hoop.devstack.models import StackInfo

DAGS = Path(__file__).parent / "dags_approvals"


@pytest.fixture(scope="session")
def airflow_services(stack: StackInfo) -> Iterator[AirflowServices]:
    """Started once per session (about 30 s), stopped by PID at the end."""
    root = Path(tempfile.mkdtemp(prefix="airflow-hoop-services-"))
    dags = root / "dags"
    shutil.copytree(DAGS, dags, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        with running_airflow(root / "home", stack, dags) as services:
            for dag_id in (
                "test_approval_flow",
                "test_approval_timeout",
                "test_approval_nosensor",
                "test_approval_self",
                "test_approval_reschedule",
            ):
                services.wait_dag(dag_id)
            yield services
    finally:
        if not os.environ.get("AIRFLOW_HOOP_KEEP_SERVICES"):  # keep the logs to debug
            shutil.rmtree(root, ignore_errors=True)
