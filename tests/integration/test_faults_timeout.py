"""Fault: Airflow kills a governed SQL task (execution_timeout) while its statement runs.

Real Airflow (``airflow dags test``: the task runner's timeout and ``on_kill``), the session
stack's gateway, Vault and Postgres. What must hold: the statement stops on the target (no
backend of the step's user is left), the step's database user is revoked (recorded), and the
ledger records the kill (``session.result`` status ``killed``).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from support.gateway_support import ledger_records

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.records import (
    CredentialIssued,
    CredentialRevoked,
    SessionIntent,
    SessionResult,
)

pytestmark = [pytest.mark.airflow, pytest.mark.faults]
DAG_ID = "test_faults_timeout"


def test_execution_timeout_stops_the_statement_revokes_and_records(
    airflow_home: Any, stack: StackInfo
) -> None:
    proc = airflow_home.dags_test(DAG_ID)
    run_id = airflow_home.latest_run(DAG_ID)
    assert airflow_home.task_states(DAG_ID, run_id)["sleeps_too_long"] == "failed"
    assert "timed out" in (proc.stdout + proc.stderr).lower()
    records = [r for r in ledger_records(stack) if r.step and r.step.run_id == run_id]
    intents = [r.body for r in records if isinstance(r.body, SessionIntent)]
    results = [r.body for r in records if isinstance(r.body, SessionResult)]
    assert [i.script for i in intents] == ["SELECT pg_sleep(600)"]
    assert [(r.session_id, r.status) for r in results] == [(intents[0].session_id, "killed")]
    issued = [r.body for r in records if isinstance(r.body, CredentialIssued)]
    revoked = [r.body for r in records if isinstance(r.body, CredentialRevoked)]
    assert [r.lease_id for r in revoked] == [i.lease_id for i in issued]
    user = issued[0].db_user
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone() is None
        backends = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (user,)
        ).fetchone()
        assert backends == (0,), "the statement outlived the task"
