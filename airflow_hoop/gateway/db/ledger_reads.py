"""Read-only queries of the ledger for auditors: filtered pages, checkpoints, windows, streams.

Nothing here writes. The stream hands out each record's exact stored bytes (the text that was
hashed), so a verifier can recompute the chain without trusting any re-encoding.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.ledger.chain import GENESIS_HASH, StoredRecord

#: Rows fetched from the server-side cursor at a time while streaming.
STREAM_BATCH = 5000


class LedgerFilter(BaseModel):
    """Optional filters of a ledger page; all given ones must match."""

    since: datetime | None = None
    until: datetime | None = None
    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    connection: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for column, op, value in (
            ("time", ">=", self.since),
            ("time", "<", self.until),
            ("dag_id", "=", self.dag_id),
            ("task_id", "=", self.task_id),
            ("run_id", "=", self.run_id),
            ("connection", "=", self.connection),
        ):
            if value is not None:
                clauses.append(f"{column} {op} %s")
                params.append(value)
        return (" AND ".join(clauses) or "true"), params


class LedgerWindowBounds(BaseModel):
    first_seq: int | None
    last_seq: int | None
    records: int
    head_seq: int | None


async def ledger_page(
    store: GatewayStore, after_seq: int, limit: int, where: LedgerFilter
) -> list[StoredRecord]:
    """Records after ``after_seq`` matching the filter, in sequence order."""
    clause, params = where.where()
    async with store.connection("read the ledger") as conn:
        cur = await conn.execute(
            f"SELECT seq, body, hash FROM ledger WHERE seq > %s AND {clause} ORDER BY seq LIMIT %s",
            [after_seq, *params, limit],
        )
        return [StoredRecord(seq=s, body=b, hash=h) for s, b, h in await cur.fetchall()]


async def checkpoint_page(
    store: GatewayStore,
    after_seq: int,
    before_seq: int | None,
    limit: int,
    newest_first: bool,
) -> list[StoredRecord]:
    """Checkpoint records with ``after_seq < seq < before_seq``."""
    order = "DESC" if newest_first else "ASC"
    async with store.connection("read the ledger's checkpoints") as conn:
        cur = await conn.execute(
            "SELECT seq, body, hash FROM ledger WHERE kind = 'checkpoint' AND seq > %s "
            f"AND (%s::bigint IS NULL OR seq < %s) ORDER BY seq {order} LIMIT %s",
            (after_seq, before_seq, before_seq, limit),
        )
        return [StoredRecord(seq=s, body=b, hash=h) for s, b, h in await cur.fetchall()]


async def key_certificates(store: GatewayStore) -> list[StoredRecord]:
    """Every ``gateway.key`` record (one per process start or key renewal: few)."""
    async with store.connection("read the ledger's key certificates") as conn:
        cur = await conn.execute(
            "SELECT seq, body, hash FROM ledger WHERE kind = 'gateway.key' ORDER BY seq"
        )
        return [StoredRecord(seq=s, body=b, hash=h) for s, b, h in await cur.fetchall()]


async def hash_at(store: GatewayStore, seq: int) -> str | None:
    """The chain hash at ``seq`` (genesis for 0); None when there is no such record."""
    if seq == 0:
        return GENESIS_HASH
    async with store.connection("read the ledger") as conn:
        cur = await conn.execute("SELECT hash FROM ledger WHERE seq = %s", (seq,))
        row = await cur.fetchone()
    return None if row is None else str(row[0])


async def window_bounds(
    store: GatewayStore, since: datetime, until: datetime
) -> LedgerWindowBounds:
    """First and last sequence of the records with ``since <= time < until``."""
    async with store.connection("read the ledger") as conn:
        cur = await conn.execute(
            "SELECT min(seq), max(seq), count(*), (SELECT max(seq) FROM ledger) "
            "FROM ledger WHERE time >= %s AND time < %s",
            (since, until),
        )
        row = await cur.fetchone()
    assert row is not None
    return LedgerWindowBounds(first_seq=row[0], last_seq=row[1], records=row[2], head_seq=row[3])


async def stream_lines(
    store: GatewayStore, after_seq: int, through_seq: int | None
) -> AsyncIterator[bytes]:
    """NDJSON: ``{"seq":N,"hash":"…","record":<stored bytes>}`` per record (with
    ``"batch":"<batch signature>"`` before ``record`` on a batch's last record), then a trailer
    ``{"end":true,"last_seq":…,"records":…}`` so a reader can tell a cut stream from the end."""
    last, count = after_seq, 0
    # A named (server-side) cursor: memory stays bounded whatever the range.
    async with (
        store.connection("stream the ledger") as conn,
        conn.transaction(),
        conn.cursor(name="ledger_stream") as cur,
    ):
        await cur.execute(
            "SELECT seq, hash, body, batch_sig FROM ledger WHERE seq > %s "
            "AND (%s::bigint IS NULL OR seq <= %s) ORDER BY seq",
            (after_seq, through_seq, through_seq),
        )
        while rows := await cur.fetchmany(STREAM_BATCH):
            chunk = "".join(map(_stream_line, rows))
            last, count = rows[-1][0], count + len(rows)
            yield chunk.encode("utf-8")
    yield f'{{"end":true,"last_seq":{last},"records":{count}}}\n'.encode()


def _stream_line(row: tuple[Any, ...]) -> str:
    seq, digest, body, batch_sig = row
    if batch_sig is None:
        return f'{{"seq":{seq},"hash":"{digest}","record":{body}}}\n'
    # json.dumps: a batch_sig written by hand could hold a quote; the reader refuses it then.
    return f'{{"seq":{seq},"hash":"{digest}","batch":{json.dumps(batch_sig)},"record":{body}}}\n'
