"""One real Airflow (api-server, scheduler, dag-processor, triggerer) for the approval tests, the
headless browser of the UI tests, and helpers for a run's pending review and its decision in the
UI."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_hoop.devstack.airflow_services import AirflowServices, running_airflow
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.wire.reviews import Review

DAGS = Path(__file__).parent / "dags_approvals"
CHROMIUM = "/usr/bin/chromium"


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
                "test_approval_shell",
                "test_approval_reschedule",
            ):
                services.wait_dag(dag_id)
            yield services
    finally:
        if not os.environ.get("AIRFLOW_HOOP_KEEP_SERVICES"):  # keep the logs to debug
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium (make system-deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def pending_review(stack: StackInfo, run_id: str, timeout: float = 60.0) -> Review:
    import time

    deadline = time.monotonic() + timeout
    with httpx.Client(
        base_url=stack.gateway_url,
        headers={"Authorization": f"Bearer {stack.auditor_api_key}"},
        trust_env=False,
    ) as gateway:
        while time.monotonic() < deadline:
            reviews = gateway.get("/api/reviews", params={"run_id": run_id}).json()
            if reviews:
                return Review.model_validate(reviews[0])
            time.sleep(0.3)
    raise AssertionError(f"no review for run {run_id}")


def decide_in_ui(
    af: AirflowServices, user: str, review: Review, decision: str, reason: str = ""
) -> httpx.Response:
    ext = review.airflow_hoop
    assert ext is not None
    with af.client(user) as api:
        return api.post(
            f"/hoop/approvals/decide/{ext.target.dag_id}/{review.id}",
            data={"decision": decision, "reason": reason, "command_sha256": ext.command_sha256},
            follow_redirects=False,
        )
