"""Approval notifications from real Airflow tasks: api-server, scheduler, dag-processor and
triggerer (LocalExecutor) with the real gateway, OpenBao and Postgres; Airflow's own
``SmtpNotifier`` mails a local SMTP sink. A person decides through the UI plugin's endpoint.

Both runs wait in parallel: the operator with ``requires_approval=True`` (approved) and the
sensor (rejected). Each mails the request when it asks, the reminder when its trigger wakes it
half-way through its 60 s wait (lead 30 s), and the decision when it resumes with it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from support.approval_fixtures import decide_in_ui, pending_review
from support.notification_support import Mail, smtp_sink, wait_for

from airflow_hoop.devstack.airflow_services import AirflowServices, running_airflow
from airflow_hoop.devstack.models import StackInfo

pytestmark = pytest.mark.airflow

DAGS = Path(__file__).parent.parent / "support" / "dags_notifications"
CARD = "4111-1111-1111-1111"
OP, SENSOR = "test_approval_notify_op", "test_approval_notify_sensor"


@pytest.fixture(scope="module")
def mails() -> Iterator[tuple[int, list[Mail]]]:
    with smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
def notify_airflow(stack: StackInfo, mails: tuple[int, list[Mail]]) -> Iterator[AirflowServices]:
    port, _ = mails
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 5},
    }
    root = Path(tempfile.mkdtemp(prefix="airflow-hoop-notify-"))
    dags = root / "dags"
    shutil.copytree(DAGS, dags, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        with running_airflow(
            root / "home",
            stack,
            dags,
            AIRFLOW_CONN_HOOP_TEST_SMTP=json.dumps(smtp),
            AIRFLOW__HOOP__APPROVAL_REMINDER_LEAD_SECONDS="30",
        ) as services:
            services.wait_dag(OP)
            services.wait_dag(SENSOR)
            yield services
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _table(stack: StackInfo) -> str:
    table = f"notify_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
        conn.execute(f"ALTER TABLE {table} OWNER TO warehouse_writer")
    return table


def _mails_of(mails: list[Mail], dag_id: str) -> list[Mail]:
    return [m for m in list(mails) if f": {dag_id}.load" in str(m.message["Subject"])]


def test_tasks_mail_request_reminder_and_decision(notify_airflow, stack, mails):
    _, sink = mails
    runs: dict[str, dict[str, Any]] = {}
    for dag_id in (OP, SENSOR):
        table = _table(stack)
        runs[dag_id] = {"table": table, "run_id": notify_airflow.trigger(dag_id, {"table": table})}
    for dag_id, run in runs.items():
        run["review"] = pending_review(stack, run["run_id"], timeout=120)
        wait_for(lambda d=dag_id: len(_mails_of(sink, d)) >= 2, 90, f"{dag_id} request + reminder")
    for dag_id, decision, reason in ((OP, "APPROVED", "checked"), (SENSOR, "REJECTED", "not now")):
        response = decide_in_ui(notify_airflow, "alice", runs[dag_id]["review"], decision, reason)
        assert response.status_code == 303, response.text
    for dag_id in (OP, SENSOR):
        wait_for(lambda d=dag_id: len(_mails_of(sink, d)) >= 3, 90, f"{dag_id} decision")
    notify_airflow.wait_state(OP, runs[OP]["run_id"], "load", {"success"}, timeout=90)
    notify_airflow.wait_state(SENSOR, runs[SENSOR]["run_id"], "approve_load", {"failed"}, 90)

    for dag_id, verb, reason in ((OP, "approved", "checked"), (SENSOR, "rejected", "not now")):
        got = _mails_of(sink, dag_id)
        assert len(got) == 3, [m.message["Subject"] for m in got]
        subjects = [str(m.message["Subject"]) for m in got]
        assert subjects[0].startswith(f"Approval requested: {dag_id}.load")
        assert subjects[1].startswith(f"Reminder, approval still pending: {dag_id}.load")
        assert subjects[2].startswith(f"Review {verb} by alice: {dag_id}.load")
        run_id = runs[dag_id]["run_id"]
        link = (
            f"{notify_airflow.url}/dags/{dag_id}/runs/{quote(run_id, safe='')}/tasks/load"
            "/plugin/hoop-approvals-ti"
        )
        for mail in got:
            assert mail.rcpt_tos == ["approvers@example.test"]
            assert CARD not in mail.raw.decode(errors="replace") and CARD not in mail.text()
            assert link in mail.text() and f"INSERT INTO {runs[dag_id]['table']}" in mail.text()
        assert reason in got[2].text()
    # The approved command ran once, with its literal (the notification only hid it).
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db)) as conn:
        rows = conn.execute(f"SELECT id, note FROM {runs[OP]['table']}").fetchall()
    assert rows == [(1, CARD)]
