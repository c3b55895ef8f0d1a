"""The gateway database: the insert-only ledger and the mutable session rows.

The ledger table holds each record's exact canonical bytes as ``text`` (``jsonb`` would
reorder keys and so change the hashed bytes). Sequence numbers are assigned inside one
transaction under a transaction-scoped advisory lock, so several gateway processes append to
one chain without gaps or forks. Concurrent appends of one process share a transaction (group
commit, ``appender.py``); each still returns only once its record is committed. The tables
are created by ``schema.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

import psycopg
import psycopg_pool
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field, JsonValue

from airflow_hoop.errors import LedgerError
from airflow_hoop.gateway.db.appender import Appended, LedgerAppender
from airflow_hoop.gateway.db.batch_signer import BatchSigner, ProcessKey
from airflow_hoop.gateway.db.recovery_schema import lease_then
from airflow_hoop.ledger.chain import StoredRecord
from airflow_hoop.ledger.records import RecordBody, StepRef

_instance: tuple[int, str] | None = None


def instance_id() -> str:
    """This gateway process's id: unique per process (a forked worker gets its own).

    It tags the process's sessions and leases, and the mark of each shell command it runs
    (``execution/runners/strays.py``), so the recovery sweep knows what a dead one left.
    """
    global _instance
    pid = os.getpid()
    if _instance is None or _instance[0] != pid:
        _instance = (pid, f"{socket.gethostname()[:40]}-{pid}-{secrets.token_hex(6)}")
    return _instance[1]


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
        # Group commit of appends (see appender.py); ``appender.append_in`` stays for callers
        # that need a record inside a transaction of their own.
        #: This process's batch key (``ledger_io/process_key.py`` certifies and installs it).
        self.signer = BatchSigner()
        self._appender = LedgerAppender(self.connection, self.signer)
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
    async def connection(self, what: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
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

    async def install_key(self, key: ProcessKey, certificate: RecordBody) -> Appended:
        """Append a new process key's certificate; its batch, and every later one, is signed
        with that key."""
        return await self._appender.append(
            None, "gateway", certificate, key=key, what="record the gateway's ledger key"
        )

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
        async with self.connection("update the session") as conn:
            await conn.execute(
                "UPDATE sessions SET status = 'done', exit_code = %s, output_status = %s, "
                "output = %s, truncated = %s, end_date = now() WHERE id = %s AND status = 'open'",
                (end.exit_code, end.output_status, end.output, end.truncated, session_id),
            )

    async def ledger_page(self, after_seq: int, limit: int) -> list[StoredRecord]:
        async with self.connection("read the ledger") as conn:
            cur = await conn.execute(
                "SELECT seq, body, hash FROM ledger WHERE seq > %s ORDER BY seq LIMIT %s",
                (after_seq, limit),
            )
            return [StoredRecord(seq=s, body=b, hash=h) for s, b, h in await cur.fetchall()]

    async def ledger_head(self) -> Appended | None:
        async with self.connection("read the ledger") as conn:
            cur = await conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
            row = await cur.fetchone()
            return None if row is None else Appended(seq=row[0], hash=row[1])

    # -- sessions ----------------------------------------------------------------------------
    async def get_session(self, session_id: uuid.UUID) -> SessionRow | None:
        async with self.connection("read a session") as conn:
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
        async with self.connection("list sessions") as conn:
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


def _row_params(row: SessionRow) -> dict[str, Any]:
    params = row.model_dump()
    params["result"] = _jsonb(row.result)
    params["metadata"] = Jsonb(row.metadata)
    return params


def _jsonb(value: dict[str, Any] | None) -> Jsonb | None:
    return None if value is None else Jsonb(value, dumps=json_dumps)


def json_dumps(value: Any) -> str:
    """JSON for a ``jsonb`` column: non-ASCII kept as is, NaN refused."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _db_reason(exc: psycopg.Error) -> str:
    """The database's primary message only: details may quote row values."""
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    text = str(exc).splitlines()
    return f"{type(exc).__name__}: {primary or (text[0] if text else 'no message')}"
