"""The gateway database: the insert-only ledger and the mutable session rows.

The ledger table holds each record's exact canonical bytes as ``text`` (``jsonb`` would
reorder keys and so change the hashed bytes). Sequence numbers are assigned inside one
transaction under a transaction-scoped advisory lock, so several gateway processes append to
one chain without gaps or forks. Concurrent appends of one process share a transaction (group
commit, ``appender.py``); each still returns only once its record is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field, JsonValue

from airflow_hoop.errors import ConfigError, LedgerError
from airflow_hoop.gateway.db.recovery_schema import RECOVERY_SCHEMA, grant_recovery, lease_then
from airflow_hoop.gateway.execution.runners.strays import instance_id
from airflow_hoop.gateway.ledger_io.appender import (  # noqa: F401  (re-exported)
    LEDGER_LOCK_KEY,
    Appended,
    LedgerAppender,
    append_records,
)
from airflow_hoop.ledger.chain import StoredRecord
from airflow_hoop.ledger.records import RecordBody, StepRef

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    time        timestamptz NOT NULL,
    kind        text NOT NULL,
    dag_id      text,
    task_id     text,
    run_id      text,
    try_number  int,
    map_index   int,
    connection  text,
    session_id  text,
    body        text NOT NULL,
    hash        text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);
CREATE INDEX IF NOT EXISTS ledger_time_idx ON ledger (time);
CREATE INDEX IF NOT EXISTS ledger_step_idx ON ledger (dag_id, run_id, task_id);
CREATE INDEX IF NOT EXISTS ledger_session_idx ON ledger (session_id);
CREATE INDEX IF NOT EXISTS ledger_checkpoint_idx ON ledger (seq) WHERE kind = 'checkpoint';
-- The Airflow UI's audit search (gateway/audit_reads.py): newest commands first for each
-- filter, so every index ends with seq. Partial: appends of other kinds pay nothing, and the
-- JSON expressions (identical to audit_reads.py's) are parsed for commands only.
CREATE INDEX IF NOT EXISTS ledger_cmd_dag_idx ON ledger (dag_id, seq)
    WHERE kind IN ('session.intent', 'session.result');
CREATE INDEX IF NOT EXISTS ledger_cmd_task_idx ON ledger (task_id, seq)
    WHERE kind IN ('session.intent', 'session.result');
CREATE INDEX IF NOT EXISTS ledger_cmd_connection_idx ON ledger (connection, seq)
    WHERE kind IN ('session.intent', 'session.result');
CREATE INDEX IF NOT EXISTS ledger_cmd_user_idx ON ledger
    ((coalesce((body::jsonb)->'body'->>'db_user', (body::jsonb)->'body'->'shell'->>'run_as')), seq)
    WHERE kind = 'session.intent';
CREATE INDEX IF NOT EXISTS ledger_cmd_triggered_by_idx ON ledger
    (((body::jsonb)->'step'->>'triggered_by'), seq) WHERE kind = 'session.intent';
-- A time window as a seq range, read from the index alone.
CREATE INDEX IF NOT EXISTS ledger_time_seq_idx ON ledger (time, seq);
CREATE INDEX IF NOT EXISTS ledger_cmd_status_idx ON ledger (((body::jsonb)->'body'->>'status'), seq)
    WHERE kind = 'session.result';

-- Take the append lock, then read the head: one round trip. Each statement of a volatile
-- plpgsql function takes a new snapshot, so the head read sees the previous holder's commit.
CREATE OR REPLACE FUNCTION ledger_lock_head(OUT seq bigint, OUT hash text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7525356031004992615);  -- appender.LEDGER_LOCK_KEY
    SELECT l.seq, l.hash INTO seq, hash FROM ledger l ORDER BY l.seq DESC LIMIT 1;
END
$$;
REVOKE ALL ON FUNCTION ledger_lock_head() FROM PUBLIC;

-- Take the append lock and check that the head is still the one the caller expects (the head
-- its previous append left); raise AH001 otherwise. Lets a gateway send lock, insert and commit
-- in one round trip when nobody else appended meanwhile (appender.py).
CREATE OR REPLACE FUNCTION ledger_lock_expect(expected_seq bigint, expected_hash text)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    head_seq bigint;
    head_hash text;
BEGIN
    PERFORM pg_advisory_xact_lock(7525356031004992615);  -- appender.LEDGER_LOCK_KEY
    SELECT l.seq, l.hash INTO head_seq, head_hash FROM ledger l ORDER BY l.seq DESC LIMIT 1;
    IF head_seq IS DISTINCT FROM expected_seq OR head_hash IS DISTINCT FROM expected_hash THEN
        RAISE EXCEPTION 'the ledger head moved' USING ERRCODE = 'AH001';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION ledger_lock_expect(bigint, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on ledger refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'ledger records are never changed or removed; append a new record';
END
$$;
CREATE OR REPLACE TRIGGER ledger_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE OR REPLACE TRIGGER ledger_no_truncate
    BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
-- ALWAYS: fire even under session_replication_role = replica, the usual trigger bypass.
ALTER TABLE ledger ENABLE ALWAYS TRIGGER ledger_no_update_delete;
ALTER TABLE ledger ENABLE ALWAYS TRIGGER ledger_no_truncate;

CREATE TABLE IF NOT EXISTS sessions (
    id              uuid PRIMARY KEY,
    connection      text NOT NULL,
    step_key        text NOT NULL,
    dag_id          text NOT NULL,
    task_id         text NOT NULL,
    run_id          text NOT NULL,
    try_number      int NOT NULL,
    map_index       int NOT NULL,
    "user"          text,
    status          text NOT NULL CHECK (status IN ('open', 'done')),
    exit_code       int,
    output_status   text,
    output          text,
    truncated       boolean NOT NULL DEFAULT false,
    result          jsonb,
    script          text NOT NULL,
    correlation_id  text,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    start_date      timestamptz NOT NULL,
    end_date        timestamptz
);
CREATE INDEX IF NOT EXISTS sessions_correlation_idx ON sessions (correlation_id);
CREATE INDEX IF NOT EXISTS sessions_step_idx ON sessions (step_key, start_date);
-- Commands still running, for the audit search's status "open" (gateway/audit_reads.py).
CREATE INDEX IF NOT EXISTS sessions_open_idx ON sessions (id) WHERE status = 'open';
-- A shell command's output can be megabytes: lz4 stores it about twice as fast as pglz
-- (measured). Kept as is where the server was built without lz4.
DO $$ BEGIN
    ALTER TABLE sessions ALTER COLUMN output SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN NULL;
END $$;

-- Reviews (approvals): mutable operational state; every change is also a ledger record.
CREATE TABLE IF NOT EXISTS reviews (
    id                      uuid PRIMARY KEY,
    session_id              uuid NOT NULL UNIQUE,
    connection              text NOT NULL,
    dag_id                  text NOT NULL,
    task_id                 text NOT NULL,
    run_id                  text NOT NULL,
    map_index               int NOT NULL,
    try_number              int,
    requester               text NOT NULL,
    requester_step          jsonb NOT NULL,
    triggered_by            text,
    status                  text NOT NULL CHECK (status IN ('PENDING', 'APPROVED', 'REJECTED',
                                                            'REVOKED', 'PROCESSING', 'EXECUTED')),
    command_sha256          text NOT NULL CHECK (command_sha256 ~ '^[0-9a-f]{64}$'),
    statements              jsonb NOT NULL,
    justification           text NOT NULL DEFAULT '',
    context                 jsonb NOT NULL DEFAULT '{}'::jsonb,
    rule                    text,
    review_groups           jsonb NOT NULL,
    decisions               jsonb NOT NULL DEFAULT '[]'::jsonb,
    min_approvals           int NOT NULL,
    expires_after_seconds   int NOT NULL,
    triggerer_may_approve   boolean NOT NULL DEFAULT false,
    rejection_reason        text,
    used_count              int NOT NULL DEFAULT 0,
    executed_try            int,
    poll_token_sha256       jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at              timestamptz NOT NULL,
    decided_at              timestamptz,
    expires_at              timestamptz
);
CREATE INDEX IF NOT EXISTS reviews_target_idx ON reviews (dag_id, run_id, task_id, map_index);
CREATE INDEX IF NOT EXISTS reviews_status_idx ON reviews (status, created_at);

REVOKE ALL ON ledger, sessions, reviews FROM PUBLIC;
"""


def migrate(conn: psycopg.Connection[Any], gateway_role: str) -> None:
    """Create or update the schema and grant ``gateway_role`` exactly what it needs.

    ``conn`` is an autocommit superuser connection to the gateway database; the tables are
    owned by that superuser, so the gateway role can never alter, drop or disable triggers.
    Idempotent.
    """
    _check_role(conn, gateway_role)
    role = sql.Identifier(gateway_role)
    with conn.transaction():
        conn.execute(SCHEMA)
        conn.execute(RECOVERY_SCHEMA)  # instances, leases, close-once (gateway/recovery.py)
        # Re-state the grants each time: a previous broader grant must not survive.
        conn.execute(sql.SQL("REVOKE ALL ON ledger, sessions FROM {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT, INSERT ON ledger TO {}").format(role))
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION ledger_lock_head() TO {}").format(role))
        conn.execute(
            sql.SQL("GRANT EXECUTE ON FUNCTION ledger_lock_expect(bigint, text) TO {}").format(role)
        )
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON sessions TO {}").format(role))
        conn.execute(sql.SQL("REVOKE ALL ON reviews FROM {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON reviews TO {}").format(role))
        grant_recovery(conn, role)


def _check_role(conn: psycopg.Connection[Any], gateway_role: str) -> None:
    row = conn.execute(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (gateway_role,)
    ).fetchone()
    if row is None:
        raise ConfigError(
            f"the gateway database role {gateway_role!r} does not exist",
            f"CREATE ROLE {gateway_role} LOGIN PASSWORD '...' before migrating",
        )
    if row[0]:
        raise ConfigError(
            f"the gateway database role {gateway_role!r} is a superuser "
            "and could rewrite the ledger",
            "use an ordinary login role for the gateway",
        )
    # The owner of the schema may DROP any table in it, ledger included.
    owner = conn.execute(
        """SELECT CASE WHEN n.nspowner = 'pg_database_owner'::regrole
                       THEN d.datdba ELSE n.nspowner END::regrole::text
             FROM pg_namespace n, pg_database d
            WHERE n.nspname = 'public' AND d.datname = current_database()"""
    ).fetchone()
    if owner is not None and owner[0].strip('"') == gateway_role:
        raise ConfigError(
            f"the gateway role {gateway_role!r} owns the gateway database's public schema, "
            "so it could drop the ledger",
            "create the gateway database owned by the superuser, not by the gateway role",
        )


class SessionRow(BaseModel):
    """One ``sessions`` row: operational state, mutable, not part of the evidence."""

    id: uuid.UUID
    connection: str
    step_key: str
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int
    user: str | None = None
    status: Literal["open", "done"]
    exit_code: int | None = None
    output_status: str | None = None
    output: str | None = None
    truncated: bool = False
    result: dict[str, JsonValue] | None = None
    script: str
    correlation_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    start_date: datetime
    end_date: datetime | None = None


class SessionEnd(BaseModel):
    """What changes on a session row when it is done."""

    exit_code: int
    output_status: str
    output: str
    truncated: bool
    result: dict[str, JsonValue] | None = None


_SESSION_COLUMNS = (
    'id, connection, step_key, dag_id, task_id, run_id, try_number, map_index, "user", status, '
    "exit_code, output_status, output, truncated, result, script, correlation_id, metadata, "
    "start_date, end_date"
)


class GatewayStore:
    """Async access to the gateway database through a connection pool."""

    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 10) -> None:
        # autocommit: every write below opens its own explicit transaction.
        self._pool = psycopg_pool.AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "application_name": "airflow-hoop gateway"},
            timeout=10.0,
        )
        # Group commit of appends (see appender.py); _append_in stays for callers that need
        # a record inside a transaction of their own.
        self._appender = LedgerAppender(self._conn)
        self._pool_check: asyncio.Task[None] | None = None
        #: This process's id in ``gateway_instances``: tags its sessions and leases (recovery).
        self.instance_id = instance_id()

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=15.0)
        except psycopg_pool.PoolTimeout:
            await self._pool.close()
            raise LedgerError(
                "cannot connect to the gateway database",
                "check database_dsn in the gateway settings and that Postgres runs",
            ) from None
        self._appender.start()

    async def close(self) -> None:
        await self._appender.stop()
        await self._pool.close()

    @asynccontextmanager
    async def _conn(self, what: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; database failures become LedgerError naming ``what``."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout:
            raise LedgerError(
                f"the gateway database is unreachable while trying to {what}",
                "check that the gateway database runs and accepts the gateway role",
            ) from None
        except psycopg.OperationalError as exc:
            # The server went away or restarted: the other pooled connections are as stale as
            # this one; have them checked now rather than failing one request each.
            self._renew_pool()
            raise LedgerError(
                f"the gateway database is unreachable or was restarted while trying to {what} "
                f"({_db_reason(exc)})",
                "check that the gateway database runs; the gateway reconnects by itself",
            ) from None
        except psycopg.Error as exc:
            raise LedgerError(
                f"the gateway database refused to {what} ({_db_reason(exc)})",
                "restore the gateway role's grants (SELECT, INSERT on ledger) and the database",
            ) from None

    def _renew_pool(self) -> None:
        """Check every idle pooled connection in the background (discarding the broken)."""
        if self._pool_check is None or self._pool_check.done():
            self._pool_check = asyncio.create_task(self._check_pool(), name="pool-check")

    async def _check_pool(self) -> None:
        with contextlib.suppress(Exception):
            await self._pool.check()

    def connection(self, what: str) -> Any:
        """A pooled connection (async context manager); failures become LedgerError."""
        return self._conn(what)

    # -- ledger ------------------------------------------------------------------------------
    async def append(self, step: StepRef | None, actor: str, body: RecordBody) -> Appended:
        """Append one record; returns its seq and hash once it is committed.

        A credential record also updates ``gateway_leases`` in the same transaction, so the
        recovery sweep knows which leases a dead gateway left unrevoked.
        """
        then = lease_then(step, body, self.instance_id)
        if then is None:
            return await self._appender.append(step, actor, body)
        return await self._appender.append(step, actor, body, then=then)

    async def begin_session(self, row: SessionRow, step: StepRef, body: RecordBody) -> Appended:
        """Accept an exec: its intent record and its session row, atomically."""

        async def insert_row(conn: psycopg.AsyncConnection[Any], _: Appended) -> None:
            await conn.execute(
                f"INSERT INTO sessions ({_SESSION_COLUMNS}, instance_id) VALUES "
                "(%(id)s, %(connection)s, %(step_key)s, %(dag_id)s, %(task_id)s, %(run_id)s, "
                "%(try_number)s, %(map_index)s, %(user)s, %(status)s, %(exit_code)s, "
                "%(output_status)s, %(output)s, %(truncated)s, %(result)s, %(script)s, "
                "%(correlation_id)s, %(metadata)s, %(start_date)s, %(end_date)s, "
                "%(instance_id)s)",
                {**_row_params(row), "instance_id": self.instance_id},
            )

        return await self._appender.append(
            step, step.key, body, then=insert_row, what="write the session intent"
        )

    async def finish_session(
        self, session_id: uuid.UUID, end: SessionEnd, step: StepRef, actor: str, body: RecordBody
    ) -> Appended:
        """Close an exec: its result record and the session row update, atomically.

        The typed result stored on the row gains ``result_seq``, known only once appended.
        """

        async def update_row(conn: psycopg.AsyncConnection[Any], appended: Appended) -> None:
            result = None if end.result is None else {**end.result, "result_seq": appended.seq}
            await conn.execute(
                "UPDATE sessions SET status = 'done', exit_code = %s, output_status = %s, "
                "output = %s, truncated = %s, result = %s, end_date = now() WHERE id = %s",
                (
                    end.exit_code,
                    end.output_status,
                    end.output,
                    end.truncated,
                    _jsonb(result),
                    session_id,
                ),
            )

        return await self._appender.append(
            step, actor, body, then=update_row, what="write the session result"
        )

    async def mark_session_done(self, session_id: uuid.UUID, end: SessionEnd) -> None:
        """Close a session row without a record (used only when the ledger itself failed)."""
        async with self._conn("update the session") as conn:
            await conn.execute(
                "UPDATE sessions SET status = 'done', exit_code = %s, output_status = %s, "
                "output = %s, truncated = %s, end_date = now() WHERE id = %s AND status = 'open'",
                (end.exit_code, end.output_status, end.output, end.truncated, session_id),
            )

    async def ledger_page(self, after_seq: int, limit: int) -> list[StoredRecord]:
        async with self._conn("read the ledger") as conn:
            cur = await conn.execute(
                "SELECT seq, body, hash FROM ledger WHERE seq > %s ORDER BY seq LIMIT %s",
                (after_seq, limit),
            )
            return [StoredRecord(seq=s, body=b, hash=h) for s, b, h in await cur.fetchall()]

    async def ledger_head(self) -> Appended | None:
        async with self._conn("read the ledger") as conn:
            cur = await conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
            row = await cur.fetchone()
            return None if row is None else Appended(seq=row[0], hash=row[1])

    # -- sessions ----------------------------------------------------------------------------
    async def get_session(self, session_id: uuid.UUID) -> SessionRow | None:
        async with self._conn("read a session") as conn:
            cur = conn.cursor(row_factory=class_row(SessionRow))
            await cur.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = %s", (session_id,)
            )
            return await cur.fetchone()

    async def list_sessions(
        self, *, correlation_id: str | None, step_key: str | None, limit: int, offset: int
    ) -> tuple[list[SessionRow], int]:
        """Newest first; ``step_key`` None means every step (API keys)."""
        where = (
            "WHERE (%(cid)s::text IS NULL OR correlation_id = %(cid)s) "
            "AND (%(sk)s::text IS NULL OR step_key = %(sk)s)"
        )
        params: dict[str, Any] = {
            "cid": correlation_id,
            "sk": step_key,
            "lim": limit,
            "off": offset,
        }
        async with self._conn("list sessions") as conn:
            cur = conn.cursor(row_factory=class_row(SessionRow))
            await cur.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions {where} "
                "ORDER BY start_date DESC, id LIMIT %(lim)s OFFSET %(off)s",
                params,
            )
            rows = await cur.fetchall()
            count_cur = await conn.execute(f"SELECT count(*) FROM sessions {where}", params)
            total = await count_cur.fetchone()
            return rows, int(total[0]) if total else 0


async def _append_in(
    conn: psycopg.AsyncConnection[Any], step: StepRef | None, actor: str, body: RecordBody
) -> Appended:
    """Append inside the caller's transaction, under the ledger's advisory lock."""
    return (await append_records(conn, [(step, actor, body)]))[0]


def _row_params(row: SessionRow) -> dict[str, Any]:
    params = row.model_dump()
    params["result"] = _jsonb(row.result)
    params["metadata"] = Jsonb(row.metadata)
    return params


def _jsonb(value: dict[str, Any] | None) -> Jsonb | None:
    return None if value is None else Jsonb(value, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _db_reason(exc: psycopg.Error) -> str:
    """The database's primary message only: details may quote row values."""
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    text = str(exc).splitlines()
    return f"{type(exc).__name__}: {primary or (text[0] if text else 'no message')}"
