"""The database is the guarantee: unapproved commands under a ``writes`` rule cannot write.

Real PostgreSQL, OpenBao and gateway processes. The corpus (``support/readonly_corpus.py``)
hides writes in functions, views, shadowed names, quoting, comments, dollar quotes,
transaction control, session settings and roles. Each statement runs WITHOUT an approval:

- on the stack's gateway, every statement its label calls read-only (the others are refused
  for want of an approval, as before);
- on a gateway whose label is forced to say "read" for everything (a ``sitecustomize`` in
  that process replaces ``PostgresTarget.label``): the enforcement must not depend on the
  label at all.

PostgreSQL refuses each (SQLSTATE recorded in the session's result record), the tables are
unchanged (checksums), and the same statements, approved, run as the writer.
"""

from __future__ import annotations

import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.gateway_support import (
    CONNECTION,
    StepClient,
    extra_gateway,
    ledger_records,
    step_client,
)
from support.readonly_corpus import CORPUS, Attack, checksums, drop, objects

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.commands import command_sha256, parameters_sha256, statement_sha256
from airflow_hoop.ledger.records import (
    CredentialIssued,
    CredentialRevoked,
    SessionIntent,
    SessionResult,
    StepRef,
)
from airflow_hoop.ledger.sql_label import label_sql

#: Covered by the devstack's ``sensitive-writes`` rule (required_for: writes).
DAG = "test_approval_readonly"
#: Covered by the extra gateway's rule ``required_for: all``: every statement is approved.
DAG_ALL = "test_dbro_all"


def _step(dag: str = DAG, task: str = "load", run_id: str | None = None) -> StepRef:
    return StepRef(
        dag_id=dag,
        task_id=task,
        run_id=run_id or f"manual__{uuid.uuid4().hex[:10]}",
        try_number=1,
    )


@pytest.fixture
def suffix(stack: StackInfo, admin_conn: Any) -> Iterator[str]:
    """The corpus's tables, functions and views, created as the superuser (a DBA)."""
    sfx = uuid.uuid4().hex[:8]
    conn = admin_conn()
    for statement in objects(sfx):
        conn.execute(statement)
    yield sfx
    for statement in drop(sfx):
        conn.execute(statement)


@pytest.fixture(scope="module")
def forced_read_gateway(stack: StackInfo) -> Iterator[str]:
    """A gateway whose label says "read" for every SQL statement, with a ``required_for:
    all`` rule for DAG_ALL (every statement of it needs, and uses, an approval)."""
    site = Path(stack.run_dir) / "forced-read-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            from airflow_hoop.gateway import targets
            from airflow_hoop.ledger.sql_label import ScriptLabel

            targets.PostgresTarget.label = lambda self, script, parameterized: ScriptLabel(
                "read", why="forced by the test"
            )
            """
        )
    )
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    connections = settings["connections"]
    for conn in connections:
        if conn["name"] == CONNECTION:
            rule = {
                "name": "all",
                "required_for": "all",
                "dags": [DAG_ALL],
                "groups": ["data-owners"],
            }
            conn["approvals"] = [rule, *conn["approvals"]]
    import os

    pythonpath = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    with extra_gateway(
        stack, "forced-read", env={"PYTHONPATH": pythonpath}, connections=connections
    ) as url:
        yield url


def _results(stack: StackInfo) -> tuple[dict[str, SessionIntent], dict[str, SessionResult]]:
    intents, results = {}, {}
    for record in ledger_records(stack):
        if isinstance(record.body, SessionIntent):
            intents[record.body.session_id] = record.body
        elif isinstance(record.body, SessionResult):
            results[record.body.session_id] = record.body
    return intents, results


def _run_unapproved(
    stack: StackInfo, url: str | None, attacks: list[Attack], sfx: str, admin_conn: Any
) -> None:
    conn = admin_conn()
    before = checksums(conn, sfx)
    sessions: list[tuple[Attack, str, bool]] = []
    with step_client(stack, _step(), url) as load:
        for autocommit in (False, True):
            for attack in attacks:
                response = load.exec(attack.render(sfx), autocommit=autocommit)
                assert response.status_code == 200, (attack.name, response.text)
                body = response.json()
                assert body["output_status"] == "failed", (attack.name, body["output"])
                sessions.append((attack, body["session_id"], autocommit))
                # A refused statement leaves the step's transaction aborted: end it, as a
                # DB-API client does after an error.
                if not autocommit:
                    assert load.exec("ROLLBACK").status_code == 200
        # The step still reads after all that (its read user, a fresh transaction).
        read = load.exec(f"SELECT count(*) FROM ro_t_{sfx}")
        assert read.json()["output_status"] == "success", read.text
    assert checksums(conn, sfx) == before
    intents, results = _results(stack)
    for attack, session_id, autocommit in sessions:
        result = results[session_id]
        where = (attack.name, autocommit, result.error)
        assert result.status == "failed", where
        assert result.sqlstate in attack.refused, where
        assert intents[session_id].read_only is True, where
        assert result.error, where


def test_the_label_is_not_the_guarantee_every_write_fails_in_the_database(
    stack: StackInfo, forced_read_gateway: str, suffix: str, admin_conn: Any
) -> None:
    assert len(CORPUS) >= 40
    _run_unapproved(stack, forced_read_gateway, CORPUS, suffix, admin_conn)


def test_statements_the_label_calls_read_are_refused_by_the_database(
    stack: StackInfo, suffix: str, admin_conn: Any
) -> None:
    misread = [a for a in CORPUS if label_sql(a.render(suffix), False).label != "write"]
    _run_unapproved(stack, None, misread, suffix, admin_conn)


def _approve(stack: StackInfo, url: str, sensor: StepClient, script: str) -> None:
    digest = statement_sha256(script, parameters_sha256(None))
    asked = sensor.http.post(
        "/api/airflow-hoop/reviews",
        json={
            "connection": CONNECTION,
            "target_task_id": "load",
            "statements": [{"script": script, "parameters": None}],
            "command_sha256": command_sha256([digest]),
            "justification": "corpus, approved",
        },
        headers=sensor.headers(),
    )
    assert asked.status_code in (200, 201), asked.text
    review_id = asked.json()["review"]["id"]
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
        decided = http.put(
            f"/api/reviews/{review_id}",
            json={"status": "APPROVED"},
            headers={"Authorization": f"Bearer {stack.reviewer_api_key}"},
        )
    assert decided.status_code == 200, decided.text


def test_the_same_statements_approved_run_as_the_writer(
    stack: StackInfo, forced_read_gateway: str, suffix: str
) -> None:
    url = forced_read_gateway
    for attack in [a for a in CORPUS if a.approved_runs]:
        script = attack.render(suffix)
        run_id = f"manual__{uuid.uuid4().hex[:10]}"
        with (
            step_client(stack, _step(DAG_ALL, "approve", run_id), url) as sensor,
            step_client(stack, _step(DAG_ALL, "load", run_id), url) as load,
        ):
            _approve(stack, url, sensor, script)
            response = load.exec(script, autocommit=True)
            assert response.status_code == 200, (attack.name, response.text)
            body = response.json()
            assert body["output_status"] == "success", (attack.name, body["output"])


def test_a_step_has_a_read_user_and_a_writer_both_recorded_and_revoked(
    stack: StackInfo, suffix: str, admin_conn: Any
) -> None:
    """In one step: unapproved reads as the READ user, the approved write as the writer, in
    a transaction over several execs that the step's COMMIT ends; both users revoked."""
    run_id = f"manual__{uuid.uuid4().hex[:10]}"
    insert = f"INSERT INTO ro_t_{suffix} VALUES (950, 'approved')"
    table = f"ro_t_{suffix}"
    with (
        step_client(stack, _step(DAG, "approve", run_id)) as sensor,
        step_client(stack, _step(DAG, "load", run_id)) as load,
    ):
        _approve(stack, stack.gateway_url, sensor, insert)
        first = load.exec(f"SELECT count(*) FROM {table}").json()
        assert first["output_status"] == "success", first
        wrote = load.exec(insert).json()
        assert wrote["output_status"] == "success", wrote
        # Not committed yet: the writer's transaction is open; the reader does not see it.
        assert admin_conn().execute(f"SELECT count(*) FROM {table}").fetchone() == (5,)
        committed = load.exec("COMMIT").json()
        assert committed["output_status"] == "success", committed
        assert admin_conn().execute(f"SELECT count(*) FROM {table}").fetchone() == (6,)
        users = {first["airflow_hoop"]["db_user"], wrote["airflow_hoop"]["db_user"]}
        assert len(users) == 2
    issued = {
        r.body.db_user: r.body.vault_role
        for r in ledger_records(stack)
        if isinstance(r.body, CredentialIssued) and r.step and r.step.run_id == run_id
    }
    assert issued == {
        first["airflow_hoop"]["db_user"]: "warehouse-ro",
        wrote["airflow_hoop"]["db_user"]: "warehouse-rw",
    }
    deadline = time.monotonic() + 20  # the step's end revokes in the background
    while True:
        revoked = {
            r.body.db_user for r in ledger_records(stack) if isinstance(r.body, CredentialRevoked)
        }
        if users <= revoked or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert users <= revoked
    left = (
        admin_conn()
        .execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (list(users),))
        .fetchone()
    )
    assert left == (0,)


def test_neither_dynamic_user_reaches_outside_the_database(
    stack: StackInfo, admin_conn: Any
) -> None:
    """No superuser, CREATEROLE, CREATEDB, nor membership of the server-access roles."""
    with (
        step_client(stack, _step()) as reader,
        step_client(stack, _step("test_gateway")) as writer,
    ):
        users = []
        for client in (reader, writer):
            out = client.exec("SELECT 1").json()
            assert out["output_status"] == "success", out
            users.append(out["airflow_hoop"]["db_user"])
        conn = admin_conn()
        for user in users:
            row = conn.execute(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, "
                "pg_has_role(rolname, 'pg_execute_server_program', 'MEMBER'), "
                "pg_has_role(rolname, 'pg_read_server_files', 'MEMBER'), "
                "pg_has_role(rolname, 'pg_write_server_files', 'MEMBER'), "
                "pg_has_role(rolname, 'pg_signal_backend', 'MEMBER') "
                "FROM pg_roles WHERE rolname = %s",
                (user,),
            ).fetchone()
            assert row == (False,) * 8, (user, row)
        groups = conn.execute(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
            (users[0],),
        ).fetchall()
        assert groups == [("warehouse_reader",)]
