"""Fault: the target PostgreSQL ends a governed task's connection mid-statement; the retry.

Real Airflow (``airflow dags test``, retries and all), on a stack of this module's own (its
gateway, Vault and Postgres), so the session ``stack`` other tests share is untouched.

How the restart is produced: the stack's target database (``warehouse``) and the gateway's
own database (the ledger) live in one PostgreSQL cluster. Restarting that cluster would also
take the ledger down, which is a different fault (``test_faults_dependencies.py`` covers the
whole cluster crashing under the gateway). What a restart does to the *target's* sessions is
what ``pg_terminate_backend`` does to one: a fast shutdown (``pg_ctl stop -m fast``, what a
service restart sends) ends every backend with ``FATAL 57P01 terminating connection due to
administrator command``, the same error, code and closed socket the step sees here. So the
test ends the step's backend as the superuser while its ``pg_sleep`` runs, and the ledger
stays up.

What must hold: the task log carries the database's error, the retry succeeds, the two tries
are two step identities (``try_number`` 1 and 2 in the ledger's step ref) with two different
database users, and both users are gone afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.airflow_fixtures import DAGS, AirflowHome
from support.faults_support import role_exists, verify_ledger, wait_until, warehouse_db
from support.gateway_support import ledger_records

from airflow_hoop.devstack import airflow_env
from airflow_hoop.devstack import stack as devstack
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.records import (
    CredentialIssued,
    CredentialRevoked,
    SessionIntent,
    SessionResult,
)

pytestmark = [pytest.mark.airflow, pytest.mark.faults]
DAG_ID = "test_faults_target_restart"
TASK_ID = "loses_its_connection"
#: What PostgreSQL tells a session it ends on a shutdown or pg_terminate_backend (SQLSTATE 57P01).
DATABASE_ERROR = "terminating connection due to administrator command"


@pytest.fixture(scope="module")
def rstack() -> Iterator[StackInfo]:
    info = devstack.up()
    try:
        yield info
    finally:
        devstack.down(info)


@pytest.fixture(scope="module")
def rhome(rstack: StackInfo) -> Iterator[AirflowHome]:
    """An Airflow home on this module's stack whose DAGs folder holds only this test's DAG."""
    root = Path(tempfile.mkdtemp(prefix="airflow-hoop-restart-"))
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(DAGS / "dag_faults_target_restart.py", dags)
    env = airflow_env.airflow_env(root / "home", rstack, dags)
    airflow_env.migrate(env)
    yield AirflowHome(root / "home", env)
    shutil.rmtree(root, ignore_errors=True)


def _sleeping_backend(stack: StackInfo) -> tuple[int, str] | None:
    """The backend (pid, user) running the task's long pg_sleep on the target, once it runs
    (the statement follows the gateway's correlation comment: ledger/correlation.py)."""
    with warehouse_db(stack) as conn:
        row = conn.execute(
            "SELECT pid, usename FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
            "AND query LIKE '%%SELECT pg_sleep(120)%%' AND pid <> pg_backend_pid()",
            (stack.warehouse_db,),
        ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def test_target_restart_mid_statement_fails_the_try_and_the_retry_gets_a_fresh_user(
    rstack: StackInfo, rhome: AirflowHome
) -> None:
    runner: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: runner.update(proc=rhome.dags_test(DAG_ID)))
    thread.start()
    try:
        pid, first_user = wait_until(
            "the first try's pg_sleep runs", lambda: _sleeping_backend(rstack), 240
        )
        with warehouse_db(rstack) as conn:
            ended = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert ended == (True,)
    finally:
        thread.join(300)
    assert not thread.is_alive(), "airflow dags test did not finish"
    run_id = rhome.latest_run(DAG_ID)
    assert rhome.task_states(DAG_ID, run_id)[TASK_ID] == "success"
    assert DATABASE_ERROR in rhome.task_logs(DAG_ID), "the task log lacks the database's error"

    records = [
        (r.step.try_number, r.body)
        for r in ledger_records(rstack)
        if r.step is not None and r.step.run_id == run_id
    ]
    issued = [(n, body) for n, body in records if isinstance(body, CredentialIssued)]
    assert [n for n, _ in issued] == [1, 2], "one credential per try, under its own identity"
    users = {n: c.db_user for n, c in issued}
    assert users[1] == first_user and users[2] != users[1], users
    revoked = {body.lease_id for _, body in records if isinstance(body, CredentialRevoked)}
    assert {c.lease_id for _, c in issued} <= revoked, "a try's credential was not revoked"
    intents = [(n, body.script) for n, body in records if isinstance(body, SessionIntent)]
    assert intents[:2] == [
        (1, "SELECT pg_sleep(120), session_user"),
        (2, "SELECT pg_sleep(0), session_user"),
    ], intents  # (then the hook's COMMIT, also in try 2)
    assert all(n == 2 for n, _ in intents[2:]), intents
    results = [(n, body.status) for n, body in records if isinstance(body, SessionResult)]
    assert results[0] == (1, "failed") and all(r == (2, "success") for r in results[1:]), results
    assert len(results) == len(intents)
    # Both users are gone: the first with its failed try, the second with its successful one.
    for user in users.values():
        wait_until(f"user {user} dropped", lambda u=user: not role_exists(rstack, u), 30)
    with psycopg.connect(rstack.admin_dsn(rstack.warehouse_db), autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY(%s)", (list(users.values()),)
        ).fetchone()
    assert left == (0,)
    verify_ledger(rstack, rstack.gateway_url)
