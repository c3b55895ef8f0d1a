"""The ledger in the gateway database: insert-only, tamper-evident, and written before anything
runs. Real Postgres and a real gateway; faults are produced with real grants, not mocks."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from support.gateway_support import (
    StepClient,
    extra_gateway,
    gateway_dsn,
    ledger_count,
    ledger_rows,
    new_step,
    step_client,
    step_rows,
)

from airflow_hoop.devstack.database_setup import GATEWAY_ROLE
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.gateway.db.schema import migrate
from airflow_hoop.ledger.verify import verify_chain


@pytest.fixture
def gateway_conn(stack: StackInfo) -> Iterator[psycopg.Connection]:
    """A connection as the gateway's own database role (what a compromised gateway holds)."""
    with psycopg.connect(gateway_dsn(stack), autocommit=True) as conn:
        yield conn


def _ensure_records(step: StepClient) -> None:
    response = step.exec("SELECT 1")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger SET body = body || ' '",
        "DELETE FROM ledger",
        "TRUNCATE ledger",
        "ALTER TABLE ledger DISABLE TRIGGER ALL",
        "DROP TABLE ledger",
    ],
)
def test_gateway_role_cannot_change_the_ledger(
    stack: StackInfo, step: StepClient, gateway_conn: psycopg.Connection, statement: str
) -> None:
    _ensure_records(step)
    before = step_rows(stack)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        gateway_conn.execute(statement)
    assert step_rows(stack) == before  # (checkpoints may be appended meanwhile)


@pytest.mark.parametrize(
    "statement",
    ["UPDATE ledger SET body = body || ' '", "DELETE FROM ledger WHERE seq = 1", "TRUNCATE ledger"],
)
def test_triggers_refuse_changes_even_for_the_superuser(
    stack: StackInfo, step: StepClient, admin_conn: Any, statement: str
) -> None:
    _ensure_records(step)
    conn = admin_conn(stack.gateway_db)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute(statement)
    # The usual bypass (replica mode) does not skip them either: they are ENABLE ALWAYS.
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"),
        conn.transaction(),
    ):
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(statement)


def test_gateway_role_has_only_select_and_insert(stack: StackInfo, admin_conn: Any) -> None:
    conn = admin_conn(stack.gateway_db)
    migrate(conn, GATEWAY_ROLE)  # idempotent: a second run changes nothing
    privileges = {
        p: conn.execute(
            "SELECT has_table_privilege(%s, 'ledger', %s)", (GATEWAY_ROLE, p)
        ).fetchone()[0]
        for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    }
    assert privileges == {
        "SELECT": True,
        "INSERT": True,
        "UPDATE": False,
        "DELETE": False,
        "TRUNCATE": False,
        "REFERENCES": False,
        "TRIGGER": False,
    }
    owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'ledger'").fetchone()[
        0
    ]
    assert owner != GATEWAY_ROLE


def test_superuser_tampering_is_named_by_verify_chain(
    stack: StackInfo, step: StepClient, admin_conn: Any
) -> None:
    _ensure_records(step)
    assert verify_chain(ledger_rows(stack)).ok
    conn = admin_conn(stack.gateway_db)
    target = conn.execute(
        "SELECT seq, body FROM ledger WHERE kind = 'session.intent' ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    seq, original = target

    def rewrite(body: str) -> None:
        # What a database administrator can do: lift the trigger, rewrite, restore it.
        with conn.transaction():
            conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_no_update_delete")
            conn.execute("UPDATE ledger SET body = %s WHERE seq = %s", (body, seq))
            conn.execute("ALTER TABLE ledger ENABLE ALWAYS TRIGGER ledger_no_update_delete")

    tampered = original.replace('"script":"SELECT 1"', '"script":"SELECT 2"')
    assert tampered != original
    rewrite(tampered)
    try:
        report = verify_chain(ledger_rows(stack))
        assert not report.ok and report.failure is not None
        assert report.failure.seq == seq
        assert "hash does not match" in report.failure.message
    finally:
        rewrite(original)
    assert verify_chain(ledger_rows(stack)).ok


@pytest.fixture
def side_effects(stack: StackInfo, admin_conn: Any) -> str:
    name = f"side_effect_{uuid.uuid4().hex[:8]}"
    conn = admin_conn()
    conn.execute(f"CREATE TABLE {name} (x int)")
    conn.execute(f"ALTER TABLE {name} OWNER TO warehouse_writer")
    return name


@pytest.mark.parametrize("warm", [True, False], ids=["step-context-open", "first-statement"])
def test_ledger_write_failure_runs_nothing(
    stack: StackInfo, step: StepClient, admin_conn: Any, side_effects: str, warm: bool
) -> None:
    """A real fault: the superuser revokes the gateway role's INSERT on the ledger."""
    if warm:
        _ensure_records(step)  # the step already holds its credential and connection
    gw = admin_conn(stack.gateway_db)
    before = ledger_count(stack)
    sessions_before = gw.execute("SELECT count(*) FROM sessions").fetchone()[0]
    gw.execute(f"REVOKE INSERT ON ledger FROM {GATEWAY_ROLE}")
    try:
        response = step.exec(f"INSERT INTO {side_effects} VALUES (1)", autocommit=True)
    finally:
        gw.execute(f"GRANT INSERT ON ledger TO {GATEWAY_ROLE}")
    assert response.status_code == 503, response.text
    message = response.json()["message"]
    assert message.startswith("[ledger]") and "the statement was not executed" in message
    assert "Fix:" in message
    count = f"SELECT count(*) FROM {side_effects}"
    assert admin_conn().execute(count).fetchone()[0] == 0
    assert ledger_count(stack) == before
    assert gw.execute("SELECT count(*) FROM sessions").fetchone()[0] == sessions_before
    # With the grant back the same request runs: the test would have seen a side effect.
    again = step.exec(f"INSERT INTO {side_effects} VALUES (1)", autocommit=True)
    assert again.status_code == 200, again.text
    assert admin_conn().execute(count).fetchone()[0] == 1


def test_two_gateway_processes_append_to_one_chain(stack: StackInfo) -> None:
    """Concurrent steps through two gateway processes: one gap-free chain that verifies."""
    before = ledger_count(stack)
    errors: list[str] = []

    def run(url: str, index: int) -> None:
        with step_client(stack, new_step(task_id=f"par{index}"), url) as client:
            for _ in range(3):
                response = client.exec("SELECT pg_sleep(0.01)")
                if response.status_code != 200:
                    errors.append(response.text)

    with extra_gateway(stack, "second") as second:
        threads = [
            threading.Thread(target=run, args=(stack.gateway_url if i % 2 else second, i))
            for i in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    rows = ledger_rows(stack)
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    # 6 steps x (issued + 3 x (intent + result) + revoked)
    # and the second process's key certificate
    assert ledger_count(stack) - before == 6 * (1 + 3 * 2 + 1) + 1
    assert verify_chain(rows).ok
