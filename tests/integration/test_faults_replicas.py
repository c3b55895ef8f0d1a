"""Several gateway processes on one database: a sweep never closes what a live one owns.

- Two live gateways: a long statement on one outlives several sweeps of the other (and
  ``stale_after``) and ends with its own result, not ``interrupted``.
- A gateway that stalls (SIGSTOP: a real frozen process) past ``stale_after`` is declared dead
  by the other and its session closed as ``interrupted``; when it resumes it finds itself
  fenced and stops, and the result it would have written is refused: one result per session.
"""

from __future__ import annotations

import signal
import time

import pytest
from support.faults_support import (
    at,
    gateway_db,
    gateways,
    start_running,
    verify_ledger,
    wait_until,
)
from support.gateway_support import ledger_records, new_step, step_client

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.records import SessionResult

STALE = 2.0


pytestmark = pytest.mark.faults


def _status(stack: StackInfo, session_id: str) -> str:
    with gateway_db(stack) as conn:
        row = conn.execute("SELECT status FROM sessions WHERE id = %s", (session_id,)).fetchone()
        assert row is not None
        return str(row[0])


def _results(stack: StackInfo, url: str, session_id: str) -> list[SessionResult]:
    return [
        r.body
        for r in ledger_records(at(stack, url))
        if isinstance(r.body, SessionResult) and r.body.session_id == session_id
    ]


def test_a_live_gateways_session_survives_the_other_gateways_sweeps(fstack: StackInfo) -> None:
    with gateways(fstack, ("one", {}), ("two", {})) as (one, two):
        with step_client(fstack, new_step("test_faults"), url=one.url) as step:
            sleep = STALE * 2 + 1
            answer = step.exec(f"SELECT pg_sleep({sleep})")
            assert answer.status_code == 200, answer.text  # within the sync window
            session_id = answer.json()["session_id"]
        results = _results(fstack, two.url, session_id)
        assert [r.status for r in results] == ["success"]
        assert "declared_dead" not in two.log_text()
        with gateway_db(fstack) as conn:
            row = conn.execute(
                "SELECT stopped_at FROM gateway_instances WHERE pid = %s", (one.pid,)
            ).fetchone()
        assert row == (None,), "a live gateway was declared dead"


def test_a_stalled_gateway_is_fenced_and_cannot_record_twice(fstack: StackInfo) -> None:
    with (
        gateways(fstack, ("stalls", {}), ("watcher", {})) as (stalls, watcher),
        step_client(fstack, new_step("test_faults"), url=stalls.url) as step,
    ):
        session_id = start_running(step, "SELECT pg_sleep(4)")
        stalls.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until("swept", lambda: _status(fstack, session_id) == "done", STALE + 10)
        finally:
            stalls.proc.send_signal(signal.SIGCONT)
        # It finds out at its next heartbeat and stops itself.
        wait_until("fenced gateway exits", lambda: stalls.proc.poll() is not None, 15)
        assert stalls.proc.returncode == -signal.SIGKILL
        assert "was declared dead by another gateway" in stalls.log_text()
        time.sleep(0.5)
        results = _results(fstack, watcher.url, session_id)
        assert [r.status for r in results] == ["interrupted"]
        verify_ledger(fstack, watcher.url)
