"""Approvals with real Airflow: api-server + scheduler + dag-processor + triggerer (LocalExecutor),
the real gateway, OpenBao and Postgres. People decide through the UI plugin's endpoint.

All runs are triggered up front (one module fixture) so that they wait in parallel; each test
then drives one of them. The gateway's rule (writes of ``test_approval*`` need data-owners)
is what every refusal below comes from.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from support.approval_fixtures import decide_in_ui, pending_review
from support.gateway_support import ledger_records

from airflow_hoop.devstack.airflow_services import AirflowServices
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.records import (
    PolicyRefused,
    ReviewDecided,
    ReviewExecuted,
    ReviewRequested,
    SessionIntent,
    SessionResult,
)

pytestmark = pytest.mark.airflow

FLOW = "test_approval_flow"


def _rows(admin_conn: Any, table: str) -> list[tuple[Any, ...]]:
    return admin_conn().execute(f"SELECT id, note FROM {table}").fetchall()


@pytest.fixture(scope="module")
def runs(airflow_services: AirflowServices, stack: StackInfo) -> dict[str, dict[str, str]]:
    """Every scenario's DAG run, triggered by admin, each writing to a table of its own."""
    import psycopg

    scenarios = {
        "approve": (FLOW, "monthly load"),
        "reject": (FLOW, "try a reject"),
        "restart": (FLOW, "survive a triggerer restart"),
        "timeout": ("test_approval_timeout", ""),
        "nosensor": ("test_approval_nosensor", ""),
        "self": ("test_approval_self", ""),
        "shell": ("test_approval_shell", ""),
        "reschedule": ("test_approval_reschedule", ""),
    }
    out: dict[str, dict[str, str]] = {}
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
        for name, (dag_id, why) in scenarios.items():
            table = f"appr_af_{name}_{uuid.uuid4().hex[:6]}"
            conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
            conn.execute(f"ALTER TABLE {table} OWNER TO warehouse_writer")
            run_id = airflow_services.trigger(dag_id, {"table": table, "why": why})
            out[name] = {"dag_id": dag_id, "run_id": run_id, "table": table}
    return out


def _wait_deferred(af: AirflowServices, run: dict[str, str], task: str = "approve_load") -> None:
    af.wait_state(run["dag_id"], run["run_id"], task, {"deferred"}, timeout=120)


# -- waiting holds no worker ------------------------------------------------------------------
def test_sensor_defers_with_the_rendered_command_under_review(airflow_services, runs, stack):
    run = runs["approve"]
    _wait_deferred(airflow_services, run)
    assert airflow_services.ti_state(FLOW, run["run_id"], "load") in (None, "none", "scheduled")
    review = pending_review(stack, run["run_id"])
    ext = review.airflow_hoop
    assert ext is not None and review.status == "PENDING"
    assert ext.target.task_id == "load" and ext.target.try_number is None
    assert ext.triggered_by == "admin"
    assert ext.justification == f"Load {run['table']}: monthly load"  # rendered template
    assert ext.statements[0].script == (
        f"INSERT INTO {run['table']} (id, note) VALUES (%(id)s, %(note)s)"
    )
    assert ext.requester.startswith(f"{FLOW}/approve_load/{run['run_id']}/")


# -- the triggerer restarts, the wait survives --------------------------------------------------
def test_wait_survives_a_triggerer_restart(airflow_services, runs, stack, admin_conn):
    run = runs["restart"]
    _wait_deferred(airflow_services, run)
    review = pending_review(stack, run["run_id"])
    airflow_services.stop_component("triggerer")
    assert airflow_services.ti_state(FLOW, run["run_id"], "approve_load") == "deferred"
    response = decide_in_ui(airflow_services, "alice", review, "APPROVED", "after restart")
    assert response.status_code == 303, response.text
    airflow_services.start_component("triggerer")
    airflow_services.wait_state(FLOW, run["run_id"], "load", {"success"}, timeout=120)
    assert len(_rows(admin_conn, run["table"])) == 1


# -- the full path: a person approves in the UI, the task runs, the ledger links it all ---------
def test_person_approves_in_ui_task_runs_and_ledger_links_it(
    airflow_services, runs, stack, admin_conn
):
    run = runs["approve"]
    _wait_deferred(airflow_services, run)
    review = pending_review(stack, run["run_id"])

    # admin triggered the run: separation of duties refuses them
    refused = decide_in_ui(airflow_services, "admin", review, "APPROVED", "my own run")
    assert refused.status_code == 403, refused.text
    assert "may not approve its reviews" in refused.text

    approved = decide_in_ui(airflow_services, "alice", review, "APPROVED", "totals checked")
    assert approved.status_code == 303, approved.text
    airflow_services.wait_state(FLOW, run["run_id"], "load", {"success"}, timeout=120)
    assert _rows(admin_conn, run["table"]) == [(1, run["run_id"])]

    records = ledger_records(stack)
    mine = [r for r in records if getattr(r.body, "review_id", None) == review.id]
    kinds = [r.body.kind for r in mine]
    assert kinds == ["review.requested", "review.decided", "review.executed"], kinds
    requested, decided, executed = (r.body for r in mine)
    assert isinstance(requested, ReviewRequested)
    assert isinstance(decided, ReviewDecided) and isinstance(executed, ReviewExecuted)
    assert (decided.approver, decided.channel, decided.reason) == (
        "alice",
        "airflow-ui",
        "totals checked",
    )
    assert decided.credential == "api-key:devstack-airflow-ui"
    assert mine[1].time > mine[0].time
    assert mine[2].step is not None and mine[2].step.task_id == "load"
    assert mine[2].step.run_id == run["run_id"] and executed.try_number == 1
    # execution: the load's statement, after the approval was used, with the approved digest
    intents = [
        r
        for r in records
        if isinstance(r.body, SessionIntent)
        and r.step is not None
        and r.step.run_id == run["run_id"]
        and r.step.task_id == "load"
    ]
    assert len(intents) >= 1 and intents[0].seq > mine[2].seq
    assert intents[0].body.script == requested.statements[0].script
    assert intents[0].body.parameters_sha256 == requested.statements[0].parameters_sha256
    result = next(
        r
        for r in records
        if isinstance(r.body, SessionResult) and r.body.session_id == intents[0].body.session_id
    )
    assert result.body.status == "success"
    # the self-approval attempt is on the record too
    assert any(
        isinstance(r.body, PolicyRefused)
        and f"admin triggered run {run['run_id']}" in r.body.reason
        for r in records
    )
    log = airflow_services.task_log(FLOW, run["run_id"], "approve_load")
    assert "APPROVED by alice via airflow-ui" in log and "totals checked" in log


def test_reject_fails_the_sensor_with_the_reason_in_the_log(airflow_services, runs, stack):
    run = runs["reject"]
    _wait_deferred(airflow_services, run)
    review = pending_review(stack, run["run_id"])
    no_reason = decide_in_ui(airflow_services, "alice", review, "REJECTED", "  ")
    assert no_reason.status_code == 400 and "reason is required" in no_reason.text
    rejected = decide_in_ui(airflow_services, "alice", review, "REJECTED", "wrong month")
    assert rejected.status_code == 303
    airflow_services.wait_state(FLOW, run["run_id"], "approve_load", {"failed"}, timeout=120)
    airflow_services.wait_state(FLOW, run["run_id"], "load", {"upstream_failed"}, timeout=60)
    log = airflow_services.task_log(FLOW, run["run_id"], "approve_load")
    assert f"review {review.id} was rejected: wrong month" in log


def test_timeout_fails_the_sensor(airflow_services, runs):
    run = runs["timeout"]
    state = airflow_services.wait_state(
        run["dag_id"], run["run_id"], "approve_load", {"failed", "success"}, timeout=120
    )
    assert state == "failed"
    assert airflow_services.wait_state(
        run["dag_id"], run["run_id"], "load", {"upstream_failed"}, timeout=60
    )
    log = airflow_services.task_log(run["dag_id"], run["run_id"], "approve_load")
    assert "timed out" in log.lower() or "AirflowSensorTimeout" in log


def test_removing_the_sensor_does_not_remove_the_approval(
    airflow_services, runs, stack, admin_conn
):
    run = runs["nosensor"]
    airflow_services.wait_state(run["dag_id"], run["run_id"], "load", {"failed"}, timeout=120)
    assert _rows(admin_conn, run["table"]) == []
    log = airflow_services.task_log(run["dag_id"], run["run_id"], "load")
    assert "[gateway policy]" in log and "no approval was requested for this step" in log
    refusals = [
        r
        for r in ledger_records(stack)
        if isinstance(r.body, PolicyRefused)
        and r.step is not None
        and r.step.run_id == run["run_id"]
    ]
    assert refusals and "approval required" in refusals[0].body.reason


def test_requires_approval_on_the_operator_itself(airflow_services, runs, stack, admin_conn):
    run = runs["self"]
    _wait_deferred(airflow_services, run, task="load")
    review = pending_review(stack, run["run_id"])
    ext = review.airflow_hoop
    assert ext is not None and ext.target.try_number == 1 and ext.target.task_id == "load"
    with httpx.Client(base_url=stack.gateway_url, trust_env=False) as gateway:
        response = gateway.put(
            f"/api/reviews/{review.id}",
            json={"status": "APPROVED", "airflow_hoop": {"reason": "via the API"}},
            headers={"Authorization": f"Bearer {stack.reviewer_api_key}"},
        )
    assert response.status_code == 200, response.text
    airflow_services.wait_state(run["dag_id"], run["run_id"], "load", {"success"}, timeout=120)
    assert len(_rows(admin_conn, run["table"])) == 1


def test_requires_approval_on_the_shell_operator(airflow_services, runs, stack, admin_conn):
    run = runs["shell"]
    _wait_deferred(airflow_services, run, task="load")
    assert not _rows(admin_conn, run["table"])  # nothing ran while the review is pending
    review = pending_review(stack, run["run_id"])
    ext = review.airflow_hoop
    assert ext is not None and ext.connection == "ops_shell" and ext.target.try_number == 1
    assert run["table"] in ext.statements[0].script and ext.statements[0].needs_approval
    with httpx.Client(base_url=stack.gateway_url, trust_env=False) as gateway:
        response = gateway.put(
            f"/api/reviews/{review.id}",
            json={"status": "APPROVED", "airflow_hoop": {"reason": "shell ok"}},
            headers={"Authorization": f"Bearer {stack.reviewer_api_key}"},
        )
    assert response.status_code == 200, response.text
    state = airflow_services.wait_state(
        run["dag_id"], run["run_id"], "load", {"success", "failed"}, timeout=120
    )
    log = airflow_services.task_log(run["dag_id"], run["run_id"], "load")
    assert state == "success", log[-3000:]
    assert _rows(admin_conn, run["table"]) == [(1, "shell")]
    used = [
        r.body
        for r in ledger_records(stack)
        if isinstance(r.body, ReviewExecuted) and r.body.review_id == review.id
    ]
    assert len(used) == 1


def test_classic_reschedule_mode_asks_once_and_proceeds(airflow_services, runs, stack, admin_conn):
    run = runs["reschedule"]
    state = airflow_services.wait_state(
        run["dag_id"], run["run_id"], "approve_load", {"up_for_reschedule", "failed"}, timeout=120
    )
    log = airflow_services.task_log(run["dag_id"], run["run_id"], "approve_load")
    assert state == "up_for_reschedule", log[-3000:]
    review = pending_review(stack, run["run_id"])
    import time

    time.sleep(12)  # another poke: it asks again and gets the same open review
    with httpx.Client(
        base_url=stack.gateway_url,
        headers={"Authorization": f"Bearer {stack.reviewer_api_key}"},
        trust_env=False,
    ) as gateway:
        listed = gateway.get("/api/reviews", params={"run_id": run["run_id"]}).json()
        assert [r["id"] for r in listed] == [review.id]
        decided = gateway.put(
            f"/api/reviews/{review.id}", json={"status": "APPROVED", "airflow_hoop": {}}
        )
    assert decided.status_code == 200, decided.text
    airflow_services.wait_state(run["dag_id"], run["run_id"], "load", {"success"}, timeout=120)
    assert len(_rows(admin_conn, run["table"])) == 1
