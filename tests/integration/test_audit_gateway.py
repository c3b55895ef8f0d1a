"""The gateway's audit-view reads and the verification badge, against a real gateway process
with a database of its own (so that its ledger can be tampered with and restored).

Records come from real steps (Vault login, identity token, real Postgres statements).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest
from support.gateway_support import extra_gateway, new_step, step_client
from support.ledger_db import drop_db, fresh_gateway_db, unlocked
from test_tamper import WRITER_CHECKPOINTS

from airflow_hoop.client.audit_views import AuditViewsClient
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.errors import BadRequestError
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.plugins.audit.verify import verify_span
from airflow_hoop.wire.audit import AuditQuery

XSS_SQL = "/* <script>window.__xss = 1</script> */ SELECT 'x' AS x"
LONG_SQL = "SELECT " + ", ".join(f"{i} AS c{i}" for i in range(80))


@dataclass
class Audited:
    stack: StackInfo
    db: str
    url: str
    main: StepRef
    other: StepRef
    db_user: str
    started: datetime

    def client(self) -> AuditViewsClient:
        return AuditViewsClient(self.url, self.stack.auditor_api_key)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.stack.admin_dsn(self.db), autocommit=True)


@pytest.fixture(scope="module")
def audited(stack: StackInfo) -> Iterator[Audited]:
    db, dsn = fresh_gateway_db(stack, "hoop_audit")
    started = datetime.now(timezone.utc) - timedelta(seconds=1)
    main = new_step(dag_id="test_audit", task_id="load").model_copy(
        update={"triggered_by": "alice"}
    )
    other = new_step(dag_id="test_audit_other", task_id="other")
    try:
        with extra_gateway(
            stack, "audit-writer", database_dsn=dsn, checkpoints=WRITER_CHECKPOINTS
        ) as url:
            with step_client(stack, main, url) as client:
                # The failing one last: it aborts the step's transaction.
                for script in ("SELECT 1 AS one", XSS_SQL, LONG_SQL, "SELECT * FROM no_such_table"):
                    assert client.exec(script).status_code == 200
            with step_client(stack, other, url) as client:
                assert client.exec("SELECT 2 AS two").status_code == 200
        # The writer signed a last checkpoint as it stopped; the reader signs no checkpoint.
        reader = {"checkpoints": {"enabled": False}}
        with extra_gateway(stack, "audit-reader", database_dsn=dsn, **reader) as url:
            # Copied once the reader started: its key certificate (the record that certifies
            # the batch key it signs its appends with) is part of the pristine ledger.
            with psycopg.connect(stack.admin_dsn(db), autocommit=True) as conn:
                conn.execute("CREATE TABLE ledger_pristine AS SELECT * FROM ledger")
                row = conn.execute(
                    "SELECT body::jsonb->'body'->>'db_user' FROM ledger "
                    "WHERE kind = 'session.intent' AND dag_id = 'test_audit' LIMIT 1"
                ).fetchone()
            assert row is not None and row[0]
            yield Audited(stack, db, url, main, other, row[0], started)
    finally:
        drop_db(stack, db)


def _search(a: Audited, **filters: object) -> list[str]:
    with a.client() as client:
        page = client.search(AuditQuery(**filters))  # type: ignore[arg-type]
    return [r.script for r in page.rows]


def test_run_records_of_one_task_with_outputs(audited: Audited) -> None:
    with audited.client() as client:
        data = client.run_records("test_audit", audited.main.run_id, "load")
    kinds = [r["body"]["kind"] for r in data.records]  # type: ignore[index,call-overload]
    assert kinds.count("session.intent") == 4 and kinds.count("session.result") == 4
    assert "credential.issued" in kinds and "credential.revoked" in kinds
    assert {r["step"]["dag_id"] for r in data.records} == {"test_audit"}  # type: ignore[index,call-overload]
    # Each record is the stored one: the same bytes the chain hashed, as a JSON object.
    with audited.admin() as conn:
        stored = conn.execute(
            "SELECT body FROM ledger WHERE seq = %s", (data.records[0]["seq"],)
        ).fetchone()
    assert stored is not None and json.loads(stored[0]) == data.records[0]
    outputs = list(data.outputs.values())
    assert len(outputs) == 4
    assert any("one" in o.output and "1" in o.output for o in outputs)
    with audited.client() as client:
        nothing = client.run_records("test_audit", "no_such_run")
    assert nothing.records == [] and nothing.outputs == {}


def test_search_filters(audited: Audited) -> None:
    a = audited
    newest_first = _search(a, dag_id="test_audit")
    assert newest_first == ["SELECT * FROM no_such_table", LONG_SQL, XSS_SQL, "SELECT 1 AS one"]
    assert _search(a, dag_id="test_audit", status="failed") == ["SELECT * FROM no_such_table"]
    assert _search(a, task_id="other") == ["SELECT 2 AS two"]
    assert len(_search(a, user=a.db_user)) == 4  # the database user of the main step
    assert len(_search(a, user="alice")) == 4  # who triggered the run
    assert _search(a, user="nobody") == []
    assert len(_search(a, connection="warehouse")) == 5
    assert _search(a, connection="elsewhere") == []
    assert len(_search(a, since=a.started)) == 5
    assert _search(a, until=a.started) == []
    # The UI sends the DAGs its user may read: the others are not answered.
    assert _search(a, dag_ids=["test_audit_other"]) == ["SELECT 2 AS two"]
    assert _search(a, dag_ids=[]) == []


def test_search_pages_backwards_and_rows_carry_results(audited: Audited) -> None:
    seen: list[str] = []
    before = None
    with audited.client() as client:
        while True:
            page = client.search(AuditQuery(dag_id="test_audit", limit=3, before_seq=before))
            seen += [r.script for r in page.rows]
            if page.next_before_seq is None:
                break
            before = page.next_before_seq
        failed = client.search(AuditQuery(status="failed")).rows[0]
    assert len(seen) == 4 and len(set(seen)) == 4
    assert (failed.exit_code, failed.status, failed.db_user) == (1, "failed", audited.db_user)
    assert failed.triggered_by == "alice" and failed.duration_ms is not None


def test_recent_runs_of_a_dag(audited: Audited) -> None:
    with audited.client() as client:
        runs = client.recent_runs("test_audit").runs
    assert [r.run_id for r in runs] == [audited.main.run_id]
    assert (runs[0].commands, runs[0].failed) == (4, 1)


def test_reads_need_an_api_key_and_valid_input(audited: Audited) -> None:
    with httpx.Client(base_url=audited.url, trust_env=False) as anonymous:
        assert anonymous.post("/api/airflow-hoop/audit/search", json={}).status_code == 401
        assert anonymous.get("/api/airflow-hoop/audit/dag?dag_id=x").status_code == 401
    with step_client(audited.stack, new_step(dag_id="test_audit"), audited.url) as step:
        assert step.get("/api/airflow-hoop/audit/dag", dag_id="test_audit").status_code == 403
    with audited.client() as client:
        for bad in ({"since": "2026-01-01T00:00:00"}, {"limit": 0}, {"status": "x"}, {"z": 1}):
            with pytest.raises(BadRequestError):
                client._gateway.send("POST", "/api/airflow-hoop/audit/search", json=bad)
        with pytest.raises(ValueError, match="time zone"):  # naive times: refused, not guessed
            AuditQuery.model_validate({"since": "2026-01-01T00:00:00"})


def test_badge_verified_unsigned_and_failed(audited: Audited) -> None:
    a = audited
    with a.admin() as conn:
        first, last = conn.execute(
            "SELECT min(seq), max(seq) FROM ledger WHERE dag_id = 'test_audit'"
        ).fetchone()
    with a.client() as client:
        ok = verify_span(client, first, last)
    assert ok.state == "verified", ok
    assert f"seq {first}..{last}" in ok.text

    # A record rewritten by a database administrator: the badge names its sequence.
    with a.admin() as conn:
        (target,) = conn.execute(
            "SELECT min(seq) FROM ledger WHERE dag_id = 'test_audit' AND kind = 'session.intent'"
        ).fetchone()
    try:
        with a.admin() as conn, unlocked(conn):
            conn.execute(
                "UPDATE ledger SET body = replace(body, 'SELECT 1', 'SELECT 9') WHERE seq = %s",
                (target,),
            )
        with a.client() as client:
            bad = verify_span(client, first, last)
        assert bad.state == "failed" and bad.failed_seq == target, bad
        assert f"verification failed at sequence {target}" in bad.text
    finally:
        with a.admin() as conn, unlocked(conn):
            conn.execute("DELETE FROM ledger")
            conn.execute("INSERT INTO ledger SELECT * FROM ledger_pristine")

    # New records through the reader (which signs nothing): in the chain, not checkpointed.
    with step_client(a.stack, new_step(dag_id="test_audit_late"), a.url) as client:
        assert client.exec("SELECT 3").status_code == 200
    with a.admin() as conn:
        first, last = conn.execute(
            "SELECT min(seq), max(seq) FROM ledger WHERE dag_id = 'test_audit_late'"
        ).fetchone()
    with a.client() as client:
        unsigned = verify_span(client, first, last)
    assert unsigned.state == "unsigned" and "not yet checkpointed" in unsigned.text
