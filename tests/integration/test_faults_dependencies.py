"""Faults of what the gateway depends on: its own database, the target database, OpenBao.

A stack of this module's own; real processes broken for real:

- the gateway database refuses connections (``ALLOW_CONNECTIONS false`` and its sessions
  terminated; the target database on the same server stays up): a new statement is answered 503
  naming the ledger and does not run (the target table stays empty); after recovery the
  statement runs, the session whose result was lost is closed as ``interrupted`` and the chain
  verifies;
- the whole PostgreSQL server crashes (``pg_ctl stop -m immediate``) mid-statement and is
  started again: the statement fails with the database's error, new statements get 503 while
  it is down, and afterwards the same step runs again with a fresh database user;
- OpenBao is stopped (SIGSTOP: the process is frozen, requests hang; a restart is not possible
  because the devstack's OpenBao is a dev server that keeps everything in memory): a running
  statement finishes, a new step fails closed naming Vault and nothing of it is recorded as run;
  after SIGCONT new steps succeed.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.faults_support import (
    at,
    gateway,
    gateway_db,
    start_running,
    verify_ledger,
    wait_until,
    warehouse_db,
)
from support.gateway_support import ledger_records, new_step, step_client, wait_done

from airflow_hoop.devstack import postgres
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.records import CredentialIssued, SessionIntent, SessionResult

pytestmark = pytest.mark.faults


@pytest.fixture
def table(fstack: StackInfo) -> str:
    name = f"fault_{uuid.uuid4().hex[:10]}"
    with warehouse_db(fstack) as conn:
        conn.execute(f"CREATE TABLE {name} (id int)")
        conn.execute(f"ALTER TABLE {name} OWNER TO warehouse_writer")
    return name


def _rows(stack: StackInfo, table: str) -> int:
    with warehouse_db(stack) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def _pairs_hold(stack: StackInfo, url: str) -> dict[str, str]:
    """Every session row has its intent, every intent its one result; returns id -> status."""
    records = ledger_records(at(stack, url))
    intents = {r.body.session_id for r in records if isinstance(r.body, SessionIntent)}
    results: dict[str, str] = {}
    for r in records:
        if isinstance(r.body, SessionResult):
            assert r.body.session_id not in results, "two results for one session"
            results[r.body.session_id] = r.body.status
    assert set(results) == intents, "an intent without its result (or the other way round)"
    with gateway_db(stack) as conn:
        rows = {str(r[0]) for r in conn.execute("SELECT id FROM sessions").fetchall()}
    assert rows == intents, "a session row without its intent record"
    return results


def _gateway_db_access(stack: StackInfo, allowed: bool) -> None:
    with warehouse_db(stack) as conn:
        conn.execute(f"ALTER DATABASE {stack.gateway_db} ALLOW_CONNECTIONS {str(allowed).lower()}")
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (stack.gateway_db,),
            )


def test_gateway_database_down_nothing_runs_without_its_intent(
    fstack: StackInfo, table: str
) -> None:
    with (
        gateway(fstack, "ledger-down") as gw,
        step_client(fstack, new_step("test_faults"), url=gw.url) as step,
    ):
        assert step.exec("SELECT 1").status_code == 200  # the step's user and connection live
        lost_id = start_running(step, "SELECT pg_sleep(2)")
        _gateway_db_access(fstack, allowed=False)
        try:
            refused = step.exec(f"INSERT INTO {table} VALUES (1)", autocommit=True)
            assert refused.status_code == 503, refused.text
            message = refused.json()["message"]
            assert message.startswith("[ledger]") and "not executed" in message, message
            assert "Fix:" in message
            assert _rows(fstack, table) == 0, "a statement ran without its intent record"
            # Keep the outage until the pg_sleep has ended and its result append gave up (the
            # append waits up to the pool timeout for the database to come back).
            wait_until(
                "result lost",
                lambda: f"session {lost_id} ran but its result was not recorded" in gw.log_text(),
                30,
            )
        finally:
            _gateway_db_access(fstack, allowed=True)
        ran = step.exec(f"INSERT INTO {table} VALUES (2)", autocommit=True)
        assert ran.status_code == 200, ran.text
        assert _rows(fstack, table) == 1
        # The pg_sleep ended while the ledger was down: its result was lost, and the sweep
        # of this very gateway closes it once it is older than stale_after.
        info = wait_done(step, lost_id, timeout=15)
        assert info["exit_code"] == -2 and "could not be recorded" in info["output"]
        statuses = _pairs_hold(fstack, gw.url)
        assert statuses[lost_id] == "interrupted"
        verify_ledger(fstack, gw.url)


def test_postgres_crash_mid_statement_then_a_fresh_user(fstack: StackInfo) -> None:
    cluster = postgres.PgCluster(
        bin_dir=Path(fstack.pg_bin), base_dir=Path(fstack.pg_data).parent, port=fstack.pg_port
    )
    with (
        gateway(fstack, "pg-crash") as gw,
        step_client(fstack, new_step("test_faults"), url=gw.url) as step,
    ):
        crashed_id = start_running(step, "SELECT pg_sleep(60)")
        postgres.stop(Path(fstack.pg_bin), Path(fstack.pg_data))
        try:
            down = step.exec("SELECT 1")
            assert down.status_code == 503, down.text
            assert "Fix:" in down.json()["message"]
        finally:
            postgres.start(cluster)
        # The same step runs again: its broken connection is replaced by a fresh user.
        again = step.exec("SELECT session_user")
        assert again.status_code == 200, again.text
        users = [
            r.body.db_user
            for r in ledger_records(at(fstack, gw.url))
            if isinstance(r.body, CredentialIssued) and r.step and r.step.key == step.step.key
        ]
        ran_as = again.json()["airflow_hoop"]["rows"]
        assert len(users) == 2 and users[0] != users[1], (users, ran_as)
        assert again.json()["airflow_hoop"]["rows"] == [[users[1]]]
        info = wait_done(step, crashed_id, timeout=15)
        assert info["exit_code"] != 0
        statuses = _pairs_hold(fstack, gw.url)
        assert statuses[crashed_id] in ("failed", "interrupted")
        verify_ledger(fstack, gw.url)


def test_openbao_stopped_running_steps_finish_new_steps_fail_closed(fstack: StackInfo) -> None:
    overrides: dict[str, Any] = {"vault_timeout_seconds": 2}
    with (
        gateway(fstack, "bao-down", **overrides) as gw,
        step_client(fstack, new_step("test_faults"), url=gw.url) as running,
        step_client(fstack, new_step("test_faults"), url=gw.url) as newcomer,
    ):
        assert running.exec("SELECT 1").status_code == 200
        newcomer.token()  # the task side logged in before OpenBao stopped
        started = start_running(running, "SELECT pg_sleep(1.5), 42", sync=0.2)
        bao = fstack.bao_pid
        os.kill(bao, signal.SIGSTOP)
        try:
            finished = wait_done(running, started, timeout=15)
            assert finished["exit_code"] == 0  # the running statement finished cleanly
            assert running.exec("SELECT 2").status_code == 200  # its user needs no Vault
            refused = newcomer.exec("SELECT 3")
            assert refused.status_code == 503, refused.text
            message = refused.json()["message"]
            assert message.startswith("[vault]") and "nothing was executed" in message, message
            assert "start Vault/OpenBao" in message
        finally:
            os.kill(bao, signal.SIGCONT)
        wait_until("Vault answers", lambda: newcomer.exec("SELECT 4").status_code == 200, 20)
        records = ledger_records(at(fstack, gw.url))
        newcomer_intents = [
            r.body.script
            for r in records
            if isinstance(r.body, SessionIntent) and r.step and r.step.key == newcomer.step.key
        ]
        assert newcomer_intents == ["SELECT 4"], "the refused statement left an intent"
        _pairs_hold(fstack, gw.url)
        verify_ledger(fstack, gw.url)
