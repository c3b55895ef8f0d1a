"""Governed agent steps (docs/agents.md): common-ai's AgentOperator and SQLToolset, a scripted
model (pydantic-ai's FunctionModel), real Airflow, the real gateway, OpenBao and PostgreSQL.

- every tool call (schema lookups and queries) is one statement of the step, recorded once,
  attributed to the model turn that made it;
- masked columns never reach the model (the messages pydantic-ai kept, from XCom);
- a write the task sends without approval is refused by the gateway (PostgreSQL read-only);
- an approved write (Approvals tab -> gateway, and Airflow's tool approval answered by the
  plugin) runs once.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS
from support.approval_fixtures import decide_in_ui, pending_review

from airflow_hoop.cli.demo import read_ledger
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.canonical import sha256_hex
from airflow_hoop.ledger.records import (
    LedgerRecord,
    PolicyRefused,
    ReviewExecuted,
    SessionIntent,
    SessionResult,
)

pytest.importorskip(
    "airflow.providers.common.ai", reason="the agents extra (common-ai) is not installed"
)
pytestmark = pytest.mark.airflow

TABLE = "agent_test_customers"
APPROVAL_TABLE = "agent_approval_customers"
WRITE = f"UPDATE {TABLE} SET status = 'active' WHERE id = 2"
EMAILS = ["ann@corp.example", "bo@globex.example", "cy@initech.example"]


def _seed(stack: StackInfo, table: str) -> None:
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(
            f"CREATE TABLE {table} (id int PRIMARY KEY, name text, email text, status text)"
        )
        for i, email in enumerate(EMAILS, start=1):
            conn.execute(
                f"INSERT INTO {table} VALUES (%s, %s, %s, 'past_due')", (i, f"c{i}", email)
            )
        conn.execute(f"ALTER TABLE {table} OWNER TO warehouse_writer")


def _status(stack: StackInfo, table: str, row: int) -> str:
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db)) as conn:
        found = conn.execute(f"SELECT status FROM {table} WHERE id = %s", (row,)).fetchone()
    assert found is not None
    return str(found[0])


def _run_records(stack: StackInfo, dag_id: str, run_id: str) -> list[LedgerRecord]:
    records = [LedgerRecord.model_validate_json(r.body) for r in read_ledger(stack)]
    return [r for r in records if r.step and r.step.dag_id == dag_id and r.step.run_id == run_id]


def _results(records: list[LedgerRecord]) -> dict[str, SessionResult]:
    return {r.body.session_id: r.body for r in records if isinstance(r.body, SessionResult)}


@pytest.fixture(scope="module")
def seeded(stack: StackInfo) -> None:
    _seed(stack, TABLE)


@pytest.fixture(scope="module")
def reads_run(seeded, airflow_home) -> tuple[Any, str]:
    proc = airflow_home.dags_test("test_agent_reads")
    return proc, airflow_home.latest_run("test_agent_reads")


def test_every_tool_call_is_one_recorded_statement_of_the_step(reads_run, airflow_home, stack):
    proc, run_id = reads_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert airflow_home.task_states("test_agent_reads", run_id) == {"ask": "success"}
    records = _run_records(stack, "test_agent_reads", run_id)
    intents = [r for r in records if isinstance(r.body, SessionIntent)]
    calls = [r for r in intents if r.body.agent is not None]
    # Three tool calls, each recorded exactly once, in the order the model made them.
    assert [r.body.agent.tool for r in calls] == ["list_tables", "get_schema", "query"]
    assert len({r.body.agent.tool_call_id for r in calls}) == 3
    assert [r.body.agent.turn for r in calls] == [0, 1, 2]
    # Nothing else ran but the COMMITs that close each call's transaction.
    assert {r.body.label for r in intents if r.body.agent is None} == {"transaction_control"}
    for r in calls:
        assert r.step is not None and (r.step.task_id, r.step.run_id) == ("ask", run_id)
        assert r.actor == r.step.key  # under the step's identity, not the gateway's
        assert r.body.read_only is True  # reads run read-only ([enforce])
        assert r.body.agent.model == "scripted-test"
        assert r.body.agent.prompt_text is None and r.body.agent.turn_text is None
    assert len({r.body.agent.prompt_sha256 for r in calls}) == 1
    assert len({r.body.agent.turn_sha256 for r in calls}) == 3
    results = _results(records)
    query = results[calls[2].body.session_id]
    assert query.status == "success" and query.rows_returned == len(EMAILS)
    assert query.masking is not None and query.masking.columns.get("email") == len(EMAILS)
    assert calls[2].body.script.startswith("SELECT id, name, email")


def test_masked_columns_never_reach_the_model(reads_run, airflow_home):
    _, run_id = reads_run
    xcoms = airflow_home.xcom_text("test_agent_reads", run_id)
    assert "agent_test_customers" in xcoms  # the transcript is there
    transcript = _message_history(airflow_home, "test_agent_reads", run_id)
    returned = [
        part["content"]
        for message in transcript
        for part in message.get("parts", [])
        if part.get("part_kind") == "tool-return"
    ]
    assert len(returned) == 3
    query_result = str(returned[2])
    assert "c1" in query_result and "c3" in query_result  # the rows reached the model ...
    for email in EMAILS:  # ... their e-mails did not, anywhere the model or XCom saw
        assert email not in json.dumps(transcript)
        assert email not in xcoms


def _message_history(airflow_home, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    import sqlite3

    with sqlite3.connect(airflow_home.db_path) as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'message_history'",
            (dag_id, run_id),
        ).fetchone()
    assert row, "AgentOperator pushed no message_history"
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) else value


def test_a_write_without_approval_is_refused_at_the_gateway(seeded, airflow_home, stack):
    # The task skips Airflow's tool approval (stock SQLToolset, writes allowed, no wrapper).
    proc = airflow_home.dags_test("test_agent_unapproved_write")
    run_id = airflow_home.latest_run("test_agent_unapproved_write")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = _run_records(stack, "test_agent_unapproved_write", run_id)
    # Refused before anything ran: no intent of it, a refusal naming the rule.
    assert not any(
        isinstance(r.body, SessionIntent) and r.body.script.startswith("UPDATE") for r in records
    )
    refused = [r.body for r in records if isinstance(r.body, PolicyRefused)]
    assert [b.script_sha256 for b in refused] == [sha256_hex(WRITE)]
    assert refused[0].reason.startswith("approval required: no approval was requested")
    assert not any(isinstance(r.body, ReviewExecuted) for r in records)
    assert _status(stack, TABLE, 2) == "past_due"
    # The agent was told (a retry prompt) and answered: the refusal reached the model.
    assert "needs an approval" in _message_history_text(airflow_home, run_id)


def _message_history_text(airflow_home, run_id: str) -> str:
    return json.dumps(_message_history(airflow_home, "test_agent_unapproved_write", run_id))


@pytest.mark.skipif(
    not AIRFLOW_V_3_3_PLUS,
    reason="common-ai parks a task for tool approval only on Airflow 3.3+ (AWAITING_INPUT); "
    "before 3.3 an agent's write fails the task, and the gateway refuses it unapproved anyway",
)
def test_an_approved_write_runs_once(airflow_services, stack):
    _seed(stack, APPROVAL_TABLE)
    af = airflow_services
    af.wait_dag("test_agent_approval")
    run_id = af.trigger("test_agent_approval")
    af.wait_state("test_agent_approval", run_id, "fix", {"awaiting_input"}, timeout=180)
    review = pending_review(stack, run_id)
    ext = review.airflow_hoop
    assert ext is not None and review.status == "PENDING"
    assert [s.script for s in ext.statements] == [
        f"UPDATE {APPROVAL_TABLE} SET status = 'active' WHERE id = 2"
    ]
    assert _status(stack, APPROVAL_TABLE, 2) == "past_due"  # nothing ran while it waits
    response = decide_in_ui(af, "alice", review, "APPROVED", "customer 2 paid")
    assert response.status_code == 303, response.text
    af.wait_state("test_agent_approval", run_id, "fix", {"success"}, timeout=180)
    assert _status(stack, APPROVAL_TABLE, 2) == "active"
    records = _run_records(stack, "test_agent_approval", run_id)
    executed = [r.body for r in records if isinstance(r.body, ReviewExecuted)]
    assert [e.review_id for e in executed] == [review.id]  # used once
    writes = [
        r.body
        for r in records
        if isinstance(r.body, SessionIntent) and r.body.script.startswith("UPDATE")
    ]
    assert len(writes) == 1 and writes[0].read_only is None  # ran read-write, once
    assert writes[0].agent is not None and writes[0].agent.approved_call is True
    assert _results(records)[writes[0].session_id].status == "success"
    # The Audit tab shows the step as its tool call: tool, statement, result, approval.
    with af.client("alice") as api:
        page = api.get(
            f"/hoop/audit/ti/test_agent_approval/{quote(run_id, safe='')}/fix?map_index=-1"
        )
    assert page.status_code == 200, page.text[:500]
    assert "Agent tool calls" in page.text and "scripted-analyst" in page.text
    assert 'class="tool">query<' in page.text and "customer 2 paid" in page.text
