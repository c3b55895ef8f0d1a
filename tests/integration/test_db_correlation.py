"""Correlation in the database: every pgaudit entry of a governed step joins one ledger record.

A stack of its own with pgaudit loaded (``devstack.up(pgaudit=True)``): real PostgreSQL 15,
OpenBao and gateway. Two steps whose DAG, task and run ids try to break out of the comment
(``*/ DROP TABLE corr_x; --``, nested ``/*``, newlines, quotes, non-ASCII):

- one under the devstack's ``required_for: writes`` rule: its reads run in the gateway's
  read-only transaction, one statement at a time behind the guard (plain, parameterized, a
  multi-statement script, a read that writes, refused by PostgreSQL); its unapproved INSERT
  is refused by the gateway and never reaches the database;
- one on the normal path (its step's writer): a write, a parameterized write, a script.

The test reads PostgreSQL's JSON log and joins each entry of the steps' database users: a
statement by its comment's seq to the intent record, a function's substatement to its
statement, the gateway's own guard and mark to the statement they precede, its masking lookup
to the statement it follows. Every entry must join exactly one intent record of its own step,
every intent must have entries, the hostile ids appear only encoded, and the table the ids
name still exists.
"""

from __future__ import annotations

import itertools
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from support.gateway_support import StepClient, ledger_records, step_client
from support.pgaudit_log import AuditEntry, read_entries

from airflow_hoop.devstack import stack as devstack
from airflow_hoop.devstack.database_setup import WAREHOUSE_WRITER
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.errors import ConfigError
from airflow_hoop.gateway.execution.runners.read_only import OWN_STATEMENTS
from airflow_hoop.gateway.masking.postgres import _LOOKUP
from airflow_hoop.ledger.correlation import application_name, find_comment
from airflow_hoop.ledger.records import (
    CredentialIssued,
    LedgerRecord,
    PolicyRefused,
    SessionIntent,
    SessionResult,
    StepRef,
)
from airflow_hoop.wire.sessions import ExecResponse
from airflow_hoop.wire.values import decode_value

BREAKOUT = "*/ DROP TABLE corr_x; --\n/* nested /* */ 'q\" é 😀\r\n"
#: Gateway statements that precede the script statement they serve (begin, mark, guard).
_BEFORE = frozenset(OWN_STATEMENTS) - {"COMMIT"}
#: Gateway statements that follow the one they serve: the commit of an autocommit exec, the
#: masking lookup of the result's column sources (psycopg sends its placeholders as $n).
_AFTER = frozenset({"COMMIT", _LOOKUP.replace("%s", "$1", 1).replace("%s", "$2", 1)})


@pytest.fixture(scope="module")
def audited() -> Iterator[StackInfo]:
    """A stack of its own with pgaudit on, and the tables a DBA made (as the superuser)."""
    try:
        info = devstack.up(gateway=True, pgaudit=True)
    except ConfigError as exc:  # no PostgreSQL, OpenBao or pgaudit: skip on a laptop, fail in CI
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    try:
        with psycopg.connect(info.admin_dsn(info.warehouse_db), autocommit=True) as conn:
            for statement in (
                "CREATE TABLE corr_items (id int PRIMARY KEY, name text)",
                "INSERT INTO corr_items VALUES (1, 'a'), (2, 'b')",
                "CREATE TABLE corr_x (id int)",
                "CREATE FUNCTION corr_ins() RETURNS int LANGUAGE sql AS "
                "$$ INSERT INTO corr_items VALUES (100, 'sneak') RETURNING 1 $$",
                "CREATE VIEW corr_view AS SELECT corr_ins() AS n",
                # plpgsql: never inlined, so its query is a substatement of the caller's.
                "CREATE FUNCTION corr_count() RETURNS bigint LANGUAGE plpgsql AS "
                "$$ BEGIN RETURN (SELECT count(*) FROM corr_items); END $$",
                f"ALTER TABLE corr_items OWNER TO {WAREHOUSE_WRITER}",
                f"ALTER FUNCTION corr_ins() OWNER TO {WAREHOUSE_WRITER}",
                f"ALTER VIEW corr_view OWNER TO {WAREHOUSE_WRITER}",
            ):
                conn.execute(statement)
        yield info
    finally:
        devstack.down(info)


def _step(dag: str) -> StepRef:
    return StepRef(
        dag_id=f"{dag}{BREAKOUT}",
        task_id=f"load{BREAKOUT}",
        run_id=f"manual__{uuid.uuid4().hex[:8]}{BREAKOUT}",
        try_number=1,
        map_index=2,
    )


def _ok(response: Any) -> list[list[Any]]:
    assert response.status_code == 200, response.text
    result = ExecResponse.model_validate(response.json())
    assert result.exit_code == 0, result.output
    assert result.airflow_hoop is not None
    return [[decode_value(v) for v in row] for row in result.airflow_hoop.rows]


def _run_read_only_step(client: StepClient) -> None:
    """Under ``required_for: writes`` (test_approval*): the read-only path, unapproved."""
    assert _ok(client.exec("SELECT count(*) FROM corr_items", autocommit=True)) == [[2]]
    rows = _ok(client.exec("SELECT name FROM corr_items WHERE id = %s", [1], autocommit=True))
    assert rows == [["a"]]
    script = (
        "SELECT 1 AS one; SELECT count(*) FROM corr_items;\nSELECT name FROM corr_items ORDER BY id"
    )
    assert _ok(client.exec(script)) == [["a"], ["b"]]
    refused = client.exec("INSERT INTO corr_items VALUES (99, 'refused by the gateway')")
    assert refused.status_code == 403, refused.text
    # A read that writes: the label lets it through, PostgreSQL refuses it.
    sneaky = client.exec("SELECT * FROM corr_view", autocommit=True)
    assert sneaky.status_code == 200, sneaky.text
    assert sneaky.json()["exit_code"] != 0
    assert client.end().status_code in (200, 204)


def _run_normal_step(client: StepClient) -> None:
    """Not under a rule: the step's writer, the script as one string."""
    _ok(client.exec("INSERT INTO corr_items VALUES (3, 'c')", autocommit=True))
    _ok(client.exec("UPDATE corr_items SET name = %s WHERE id = %s", ["d", 3], autocommit=True))
    assert _ok(client.exec("SELECT corr_count()", autocommit=True)) == [[3]]
    _ok(client.exec("SELECT count(*) FROM corr_items; DELETE FROM corr_items WHERE id = 3"))
    _ok(client.exec("COMMIT"))
    assert client.end().status_code in (200, 204)


def _wait_for_entries(
    info: StackInfo, users: set[str], seqs: set[int], timeout: float = 15.0
) -> list[AuditEntry]:
    """The steps' entries, once every intent's statement reached the log (the collector
    writes asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = [e for e in read_entries(info.pg_json_log) if e.user in users]
        seen = {c.seq for e in entries if (c := find_comment(e.statement)) is not None}
        if seqs <= seen or time.monotonic() > deadline:
            return entries
        time.sleep(0.2)


def _as_sent(intent: SessionIntent) -> str:
    """The script as psycopg sends it: with parameters, ``%s`` becomes ``$1``, ``$2``..."""
    if not intent.parameter_count:
        return intent.script
    numbers = itertools.count(1)
    return re.sub(r"%s", lambda _m: f"${next(numbers)}", intent.script)


def _join(entries: list[AuditEntry], intents: dict[int, LedgerRecord]) -> dict[int, list[str]]:
    """Each entry to exactly one intent seq; returns seq -> the entries' statements."""
    joined: dict[int, list[str]] = {}
    top: dict[tuple[int, int], int] = {}  # (pid, statement id) -> seq
    last: dict[int, int] = {}  # pid -> seq of its latest commented statement
    waiting: dict[int, list[AuditEntry]] = {}  # pid -> gateway statements before the next

    def add(seq: int, entry: AuditEntry) -> None:
        record = intents.get(seq)
        assert record is not None, f"no intent record {seq} for {entry.message!r}"
        assert record.step is not None
        assert entry.application_name == application_name(record.step.key), entry
        joined.setdefault(seq, []).append(entry.statement)

    for entry in entries:
        corr = find_comment(entry.statement)
        if corr is not None:
            assert entry.statement.startswith("/*"), entry.statement  # in front, once
            record = intents.get(corr.seq)
            assert record is not None and record.step is not None
            assert corr.step_key == record.step.key
            body = record.body
            assert isinstance(body, SessionIntent)
            sent = entry.statement[entry.statement.index("*/ ") + 3 :]
            # The statement as the task wrote it, after the comment (a piece of its script).
            assert sent and sent in _as_sent(body), (sent, body.script)
            top[(entry.pid, entry.statement_id)] = last[entry.pid] = corr.seq
            add(corr.seq, entry)
            for before in waiting.pop(entry.pid, []):
                add(corr.seq, before)
        elif entry.substatement_id > 1 and (entry.pid, entry.statement_id) in top:
            add(top[(entry.pid, entry.statement_id)], entry)  # run by a function or view
        elif entry.statement in _AFTER and entry.pid in last:
            add(last[entry.pid], entry)
        elif entry.statement in _BEFORE:
            waiting.setdefault(entry.pid, []).append(entry)
        else:
            raise AssertionError(f"a step user's entry joins no record: {entry.message!r}")
    assert not any(waiting.values()), f"gateway statements with no script statement: {waiting}"
    return joined


def test_every_pgaudit_entry_joins_one_intent_record(audited: StackInfo) -> None:
    read_step, normal_step = _step("test_approval_corr "), _step("test_corr ")
    with step_client(audited, read_step) as client:
        _run_read_only_step(client)
    with step_client(audited, normal_step) as client:
        _run_normal_step(client)

    keys = (read_step.key, normal_step.key)  # the ledger's step also says who attests it
    records = [r for r in ledger_records(audited) if r.step is not None and r.step.key in keys]
    intents = {r.seq: r for r in records if isinstance(r.body, SessionIntent)}
    scripts = {
        seq: r.body.script for seq, r in intents.items() if isinstance(r.body, SessionIntent)
    }
    # COMMIT is the runner's own transaction control: never sent as a script, no entry.
    expected = {seq for seq, script in scripts.items() if script != "COMMIT"}
    users = {r.body.db_user for r in records if isinstance(r.body, CredentialIssued)}
    assert len(expected) == 8 and len(users) == 2
    entries = _wait_for_entries(audited, users, expected)

    joined = _join(entries, intents)
    assert set(joined) == expected, "every statement sent has its pgaudit entries"
    # The multi-statement script in the read-only path: one entry per statement, same seq.
    three = next(seq for seq, script in scripts.items() if script.startswith("SELECT 1 AS one"))
    assert len([s for s in joined[three] if find_comment(s)]) == 3
    # A function's query: a substatement without the comment, joined through its caller.
    counted = next(seq for seq, script in scripts.items() if script == "SELECT corr_count()")
    inner = [s for s in joined[counted] if find_comment(s) is None]
    assert inner == ["(SELECT count(*) FROM corr_items)"], joined[counted]
    # The read that writes: PostgreSQL refused its INSERT before running it.
    sneaky = next(seq for seq, script in scripts.items() if script == "SELECT * FROM corr_view")
    sneaky_session = getattr(intents[sneaky].body, "session_id", None)
    result = next(
        r.body
        for r in records
        if isinstance(r.body, SessionResult) and r.body.session_id == sneaky_session
    )
    assert result.sqlstate in {"25006", "42501"}
    # The write the gateway refused never reached the database; its refusal is recorded.
    assert not any("refused by the gateway" in e.message for e in entries)
    refusals = [r.body for r in records if isinstance(r.body, PolicyRefused)]
    assert len([r for r in refusals if r.reason.startswith("approval required")]) == 1

    # The ids that tried to break out: only their encoded form is in the log.
    log_text = audited.pg_json_log.read_text(encoding="utf-8")
    assert "DROP TABLE corr_x" not in log_text
    assert "DROP%20TABLE%20corr_x" in log_text
    with psycopg.connect(audited.admin_dsn(audited.warehouse_db)) as conn:
        assert conn.execute("SELECT to_regclass('corr_x') IS NOT NULL").fetchone() == (True,)
        ids = [r[0] for r in conn.execute("SELECT id FROM corr_items ORDER BY id").fetchall()]
    assert ids == [1, 2], "each statement meant what the task wrote, nothing more"


def test_a_shell_steps_psql_session_names_the_step(audited: StackInfo) -> None:
    """A shell step's database user comes with PGAPPNAME: its psql sessions name the step."""
    step = _step("test_corr_shell ")
    with step_client(audited, step) as client:
        response = client.exec(
            "psql -tAc \"SELECT current_setting('application_name')\"", connection="ops_shell"
        )
        assert response.status_code == 200, response.text
        result = ExecResponse.model_validate(response.json())
        assert result.exit_code == 0, result.output
        assert result.output.strip() == application_name(step.key)
