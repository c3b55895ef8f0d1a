"""Read-only queries behind the Airflow UI's audit views: a run's records, command search,
a DAG's recent runs. Nothing here writes.

The search filters on fields that live inside a record's JSON (database user, status,
triggering user); the expression indexes in ``schema.SCHEMA`` (``ledger_user_idx``,
``ledger_triggered_by_idx``, ``ledger_status_idx``) make those filters index lookups. The
expressions below must stay textually identical to the indexed ones, or Postgres cannot use
the indexes.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.wire.audit import (
    MAX_OUTPUT_CHARS,
    MAX_RUN_RECORDS,
    AuditQuery,
    CommandRow,
    RecentRun,
    RecentRuns,
    RunRecords,
    SearchPage,
    StoredOutput,
)

# The indexed expressions (see schema.SCHEMA); ``x`` is the ledger row's alias.
USER_EXPR = (
    "coalesce(({x}.body::jsonb)->'body'->>'db_user', ({x}.body::jsonb)->'body'->'shell'->>'run_as')"
)
TRIGGERED_BY_EXPR = "(({x}.body::jsonb)->'step'->>'triggered_by')"
STATUS_EXPR = "(({x}.body::jsonb)->'body'->>'status')"

#: Cut of a command's text in search answers (the task's tab shows it whole).
SEARCH_SCRIPT_CHARS = 2000


def _expr(template: str, alias: str) -> str:
    return template.format(x=alias)


async def run_records(
    store: GatewayStore, dag_id: str, run_id: str, task_id: str | None
) -> tuple[RunRecords, list[str]]:
    """The run's records in sequence order: all of them, or one task's plus the run's review
    requests and decisions (an approval is recorded by the step that asked for it).

    Returns the answer without its records, and the records' stored JSON texts: the route
    splices them into the answer as they are, rather than parsing and re-encoding each.
    """
    async with store.connection("read a run's records") as conn:
        cur = await conn.execute(
            "SELECT seq, body, hash, kind, session_id FROM ledger "
            "WHERE dag_id = %(dag)s AND run_id = %(run)s AND (%(task)s::text IS NULL "
            "OR task_id = %(task)s OR kind IN ('review.requested', 'review.decided')) "
            "ORDER BY seq LIMIT %(lim)s",
            {"dag": dag_id, "run": run_id, "task": task_id, "lim": MAX_RUN_RECORDS + 1},
        )
        rows = await cur.fetchall()
        truncated = len(rows) > MAX_RUN_RECORDS
        rows = rows[:MAX_RUN_RECORDS]
        sessions = [_uuid(r[4]) for r in rows if r[3] == "session.intent"]
        ids = [s for s in sessions if s is not None]
        outputs: dict[str, StoredOutput] = {}
        if ids:
            cur = await conn.execute(
                "SELECT id::text, left(output, %s), length(output) > %s, truncated "
                "FROM sessions WHERE id = ANY(%s) AND output IS NOT NULL",
                (MAX_OUTPUT_CHARS, MAX_OUTPUT_CHARS, ids),
            )
            for sid, text, cut, gateway_cut in await cur.fetchall():
                outputs[sid] = StoredOutput(output=text, cut=bool(cut), truncated=gateway_cut)
    return RunRecords.model_construct(records=[], outputs=outputs, truncated=truncated), [
        r[1] for r in rows
    ]


def _uuid(text: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(text) if text else None
    except ValueError:
        return None


def _branches(q: AuditQuery) -> tuple[list[str], dict[str, Any]]:
    """One ``SELECT cursor, session_id`` per index path, each newest first and limited.

    Each filter has an index ending with ``seq``, so a branch walks one index backwards and
    stops after ``limit`` matches instead of sorting every match. A status filter walks the
    results (the status lives there; their step columns equal their intent's), any other
    search the intents. A user may be the database user/runner or who triggered the run:
    two branches, one per index, merged by the outer query.
    """
    results = q.status is not None and q.status != "open"
    x = "x"
    clauses = [f"{x}.kind = '{'session.result' if results else 'session.intent'}'"]
    params: dict[str, Any] = {"lim": q.limit}
    if q.since is not None or q.until is not None:
        # The window as a seq range (index-only, ledger_time_seq_idx): then each branch walks
        # its seq-ordered index inside it instead of sorting the window's every command.
        clauses.append(f"{x}.seq BETWEEN (SELECT lo FROM bounds) AND (SELECT hi FROM bounds)")
    for column, op, name in (
        ("time", ">=", "since"),
        ("time", "<", "until"),
        ("dag_id", "=", "dag_id"),
        ("task_id", "=", "task_id"),
        ("run_id", "=", "run_id"),
        ("connection", "=", "connection"),
        ("seq", "<", "before_seq"),
    ):
        value = getattr(q, name)
        if value is not None:
            clauses.append(f"{x}.{column} {op} %({name})s")
            params[name] = value
    if q.dag_ids is not None:
        clauses.append(f"{x}.dag_id = ANY(%(dag_ids)s)")
        params["dag_ids"] = q.dag_ids
    if results:
        clauses.append(f"{_expr(STATUS_EXPR, x)} = %(status)s")
        params["status"] = q.status
    elif q.status == "open":
        # Still running: the (few) open session rows, not every intent without a result.
        clauses.append(
            f"{x}.session_id IN (SELECT s.id::text FROM sessions s WHERE s.status = 'open')"
        )
    user_paths = [""]
    if q.user is not None:
        params["user"] = q.user
        if results:
            user_paths = [
                "EXISTS (SELECT 1 FROM ledger i WHERE i.session_id = x.session_id AND "
                f"i.kind = 'session.intent' AND ({_expr(USER_EXPR, 'i')} = %(user)s OR "
                f"{_expr(TRIGGERED_BY_EXPR, 'i')} = %(user)s))"
            ]
        else:
            user_paths = [
                f"{_expr(USER_EXPR, x)} = %(user)s",
                f"{_expr(TRIGGERED_BY_EXPR, x)} = %(user)s",
            ]
    branches = []
    for extra in user_paths:
        where = " AND ".join([*clauses, extra] if extra else clauses)
        branches.append(
            f"(SELECT {x}.seq AS cursor, {x}.session_id FROM ledger {x} WHERE {where} "
            f"ORDER BY {x}.seq DESC LIMIT %(lim)s)"
        )
    return branches, params


async def search_commands(store: GatewayStore, q: AuditQuery) -> SearchPage:
    """Commands (intent + result) matching every filter, newest first."""
    branches, params = _branches(q)
    bounds = ""
    if q.since is not None or q.until is not None:
        window = " AND ".join(
            c for c, v in (("time >= %(since)s", q.since), ("time < %(until)s", q.until)) if v
        )
        # seq + 0: a plain min(seq)/max(seq) is planned as a walk of the primary key in seq
        # order, filtering on time (hundreds of ms); this reads the window's index entries.
        bounds = (
            "WITH bounds AS MATERIALIZED "
            f"(SELECT min(seq + 0) AS lo, max(seq + 0) AS hi FROM ledger WHERE {window}) "
        )
    async with store.connection("search the ledger") as conn:
        cur = await conn.execute(
            f"{bounds}SELECT DISTINCT cursor, session_id FROM ({' UNION ALL '.join(branches)}) b "
            "ORDER BY cursor DESC LIMIT %(lim)s",
            params,
        )
        page = await cur.fetchall()
        sessions = [sid for _cursor, sid in page if sid]
        cur = await conn.execute(
            "SELECT seq, time, dag_id, task_id, run_id, try_number, map_index, connection, "
            "session_id, kind, body FROM ledger WHERE session_id = ANY(%s) "
            "AND kind IN ('session.intent', 'session.result') ORDER BY seq",
            (sessions,),
        )
        records = await cur.fetchall()
    intents = {r[8]: r for r in records if r[9] == "session.intent"}
    finished: dict[str, str] = {}
    for r in records:
        if r[9] == "session.result":
            finished.setdefault(r[8], r[10])
    found = [
        _command_row((*intents[sid][:9], intents[sid][10], finished.get(sid)))
        for _cursor, sid in page
        if sid in intents
    ]
    full = len(page) == q.limit
    return SearchPage(rows=found, next_before_seq=page[-1][0] if full else None)


def _command_row(row: tuple[Any, ...]) -> CommandRow:
    seq, time, dag_id, task_id, run_id, try_number, map_index, connection, sid, intent, result = row
    record = json.loads(intent)
    body = record["body"]
    step = record.get("step") or {}
    script = str(body.get("script", ""))
    shell = body.get("shell") or {}
    out = CommandRow(
        seq=seq,
        time=time,
        dag_id=dag_id or "",
        task_id=task_id or "",
        run_id=run_id or "",
        try_number=try_number or 1,
        map_index=-1 if map_index is None else map_index,
        connection=connection or "",
        session_id=sid or "",
        script=script[:SEARCH_SCRIPT_CHARS],
        script_cut=len(script) > SEARCH_SCRIPT_CHARS,
        db_user=body.get("db_user"),
        run_as=shell.get("run_as"),
        triggered_by=step.get("triggered_by"),
    )
    if result is not None:
        done = json.loads(result)["body"]
        out.status = str(done.get("status", "open"))
        out.exit_code = done.get("exit_code")
        rows_returned, rowcount = done.get("rows_returned", 0), done.get("rowcount", -1)
        out.rows = rows_returned if rows_returned else (rowcount if rowcount >= 0 else None)
        out.duration_ms = done.get("duration_ms")
    return out


async def recent_runs(store: GatewayStore, dag_id: str, limit: int) -> RecentRuns:
    """The DAG's runs with the newest records, with command and failure counts."""
    async with store.connection("read a DAG's runs") as conn:
        cur = await conn.execute(
            "WITH recent AS (SELECT run_id, max(seq) AS last FROM ledger WHERE dag_id = %(dag)s "
            "GROUP BY run_id ORDER BY last DESC LIMIT %(lim)s) "
            "SELECT l.run_id, min(l.time), max(l.time), count(*), "
            "count(*) FILTER (WHERE l.kind = 'session.intent'), "
            "count(*) FILTER (WHERE l.kind = 'session.result' "
            f"AND {_expr(STATUS_EXPR, 'l')} <> 'success') "
            "FROM ledger l JOIN recent ON l.dag_id = %(dag)s AND l.run_id = recent.run_id "
            "GROUP BY l.run_id ORDER BY max(recent.last) DESC",
            {"dag": dag_id, "lim": limit},
        )
        rows = await cur.fetchall()
    return RecentRuns(
        runs=[
            RecentRun(
                run_id=r[0],
                first_time=r[1],
                last_time=r[2],
                records=r[3],
                commands=r[4],
                failed=r[5],
            )
            for r in rows
        ]
    )
