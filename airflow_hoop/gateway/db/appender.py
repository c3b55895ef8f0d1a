"""Group commit for ledger appends: concurrent appends of one process share a transaction.

Each append must hold the ledger's advisory lock from reading the head to its commit, so
appends are serialised across every gateway process. One append per transaction costs several
round trips under the lock (measured: ~630 records/s, whatever the number of writers). Here a
single writer task per process takes every append that is waiting, writes them in one
transaction (lock, head, one multi-row insert, each append's own statements, commit) and only
then answers each caller: an append returns after its record is committed, as before, so no
command runs before its intent record is committed.

If the batch fails, each append is retried in a transaction of its own, so one bad append (a
session row that violates a constraint, say) fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import psycopg
from pydantic import BaseModel, TypeAdapter

from airflow_hoop.errors import LedgerError
from airflow_hoop.gateway.db.batch_signer import BatchSigner, ProcessKey, UnsignedHead
from airflow_hoop.ledger.canonical import canonical
from airflow_hoop.ledger.chain import GENESIS_HASH, link_hash
from airflow_hoop.ledger.records import LedgerAlarm, RecordBody, StepRef

log = logging.getLogger(__name__)

#: Key of the advisory lock that serialises appends (any constant; "hoopledg" in ASCII).
LEDGER_LOCK_KEY = 0x686F6F706C656467
#: Upper bound of records per transaction (bounds the time the lock is held).
MAX_BATCH = 500  # x 13 parameters: under Postgres' limit of 65535

_COLUMNS = (
    "seq, time, kind, dag_id, task_id, run_id, try_number, map_index, connection, session_id, "
    "body, hash, batch_sig"
)
_ROW = "(" + ", ".join(["%s"] * 13) + ")"
_LOCK_HEAD = "SELECT seq, hash, batch_sig, time FROM ledger_lock_head()"
_COPY = f"COPY ledger ({_COLUMNS}) FROM STDIN"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
#: Batches of at least this size go by COPY (one more round trip, less work per row).
COPY_MIN = 8
#: SQLSTATE of ``ledger_lock_expect()`` when another writer appended since our last commit.
HEAD_MOVED = "AH001"
#: After the head moved under us, this many batches read the head first (two round trips):
#: several busy writers would otherwise keep missing and pay a wasted round trip each time.
SKIP_AFTER_MISS = 32
_TIME = TypeAdapter(datetime)


class Appended(BaseModel):
    """Where a record landed in the chain."""

    seq: int
    hash: str


Conn = psycopg.AsyncConnection[Any]
#: Statements that must commit with the record (e.g. the session row), given where it landed.
Then = Callable[[Conn, Appended], Awaitable[None]]
#: Opens a pooled connection; database errors become LedgerError naming ``what``.
Connect = Callable[[str], Any]


class PreparedRecord:
    """A record's canonical bytes, all but seq, prev_hash and time: built outside the lock.

    The canonical record is ``{"actor":…,"body":…,"prev_hash":…,"seq":…,"step":…,"time":…,
    "v":1}`` (keys sorted), so the parts known before the lock are spliced around the three
    that are not. ``tests/unit/test_ledger_verify.py`` checks the bytes equal
    ``LedgerRecord.canonical_bytes()``.
    """

    __slots__ = ("columns", "head", "middle")
    columns: tuple[Any, ...]

    def __init__(self, step: StepRef | None, actor: str, body: RecordBody) -> None:
        self.head = (
            b'{"actor":' + canonical(actor) + b',"body":' + canonical(body.model_dump(mode="json"))
        )
        step_json = b"null" if step is None else canonical(step.model_dump(mode="json"))
        self.middle = b',"step":' + step_json + b',"time":'
        self.columns = (
            body.kind,
            step.dag_id if step else None,
            step.task_id if step else None,
            step.run_id if step else None,
            step.try_number if step else None,
            step.map_index if step else None,
            getattr(body, "connection", None),
            getattr(body, "session_id", None),
        )

    def seal(self, seq: int, prev_hash: str, time_json: bytes) -> bytes:
        """The exact canonical bytes of the record at ``seq`` after ``prev_hash``."""
        return b"".join(
            (
                self.head,
                b',"prev_hash":"',
                prev_hash.encode("ascii"),
                b'","seq":',
                str(seq).encode("ascii"),
                self.middle,
                time_json,
                b',"v":1}',
            )
        )


async def append_records(
    conn: Conn,
    items: list[tuple[StepRef | None, str, RecordBody]] | list[PreparedRecord],
    signer: BatchSigner,
    *,
    copy: bool = False,
    key: ProcessKey | None = None,
) -> list[Appended]:
    """Append records inside the caller's transaction, under the ledger's advisory lock, as
    one batch signed with ``key`` (default: the process's current key).

    Lock and head take one round trip (``ledger_lock_head()``); a head this process did not
    write is checked first (``BatchSigner.check_head``). The rows go in one multi-row INSERT,
    or by COPY for a large batch (measured: ~45 µs a row against ~115 µs).
    """
    cur = await conn.execute(_LOCK_HEAD)
    head = await cur.fetchone()
    await signer.check_head(conn, head)
    prepared = [i if isinstance(i, PreparedRecord) else PreparedRecord(*i) for i in items]
    appended, rows = _seal(prepared, head, signer, key or signer.current)
    await _insert(conn, rows, copy=copy)
    return appended


async def append_in(
    conn: Conn, signer: BatchSigner, step: StepRef | None, actor: str, body: RecordBody
) -> Appended:
    """Append one record inside the caller's transaction, under the ledger's advisory lock."""
    return (await append_records(conn, [(step, actor, body)], signer))[0]


def _seal(
    prepared: list[PreparedRecord],
    head: tuple[Any, ...] | None,
    signer: BatchSigner,
    key: ProcessKey | None,
) -> tuple[list[Appended], list[tuple[Any, ...]]]:
    """Number and chain the records after ``head`` (seq, hash, …) and sign them as one batch
    (the signature goes on the last row): their rows and positions."""
    seq, prev_hash = (head[0], head[1]) if head and head[0] is not None else (0, GENESIS_HASH)
    first = seq + 1
    rows: list[tuple[Any, ...]] = []
    appended = []
    for record in prepared:
        seq += 1
        now = datetime.now(timezone.utc)
        data = record.seal(seq, prev_hash, _TIME.dump_json(now))
        prev_hash = link_hash(prev_hash, data)
        rows.append((seq, now, *record.columns, data.decode("utf-8"), prev_hash, None))
        appended.append(Appended.model_construct(seq=seq, hash=prev_hash))
    if rows:
        rows[-1] = (*rows[-1][:-1], signer.sign(key, first, seq, prev_hash))
    return appended, rows


async def _insert(conn: Conn, rows: list[tuple[Any, ...]], *, copy: bool) -> None:
    if copy:
        async with conn.cursor() as copy_cur, copy_cur.copy(_COPY) as writer:
            await writer.write("".join(map(_copy_line, rows)).encode("utf-8"))
    else:
        values = ", ".join([_ROW] * len(rows))
        params = [value for row in rows for value in row]
        await conn.execute(f"INSERT INTO ledger ({_COLUMNS}) VALUES {values}", params)


def _copy_line(row: tuple[Any, ...]) -> str:
    """One row in COPY's text format (backslash, tab, newline, CR escaped; NULL is \\N)."""
    seq, now, *texts, body, digest, batch_sig = row
    fields = [str(seq), now.isoformat()]
    fields += ["\\N" if v is None else str(v).translate(_COPY_ESCAPES) for v in texts]
    # Canonical JSON holds no raw tab, newline or CR: only its backslashes need escaping.
    # (A batch signature is hex, digits, dots and base64: nothing to escape.)
    fields += [body.replace("\\", "\\\\"), digest, batch_sig or "\\N"]
    return "\t".join(fields) + "\n"


class _HeadMoved(Exception):
    """Another writer appended since our last commit: read the head, then seal."""


class _Job:
    __slots__ = ("future", "key", "record", "then", "what")

    def __init__(
        self,
        record: PreparedRecord,
        then: Then | None,
        what: str,
        future: asyncio.Future[Appended],
        key: ProcessKey | None = None,
    ) -> None:
        self.record, self.then, self.what, self.future = record, then, what, future
        self.key = key


class LedgerAppender:
    """One writer task per process; ``append`` waits until its record is committed."""

    def __init__(
        self, connect: Connect, signer: BatchSigner, *, max_batch: int = MAX_BATCH
    ) -> None:
        self._connect = connect
        self.signer = signer
        self._max_batch = max_batch
        self._queue: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # The head our last commit left (seq, hash): while nobody else appends, the next
        # batch is sealed on it and sent in one round trip (``_commit_on_head``).
        self._head: tuple[int, str] | None = None
        self._skip_known_head = 0
        self._expect_available = True

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="ledger-appender")

    async def stop(self) -> None:
        """Write what is queued, then stop (never cancelled mid-batch: callers are waiting)."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        await task
        self._task = None

    async def append(
        self,
        step: StepRef | None,
        actor: str,
        body: RecordBody,
        *,
        then: Then | None = None,
        what: str = "append a ledger record",
        key: ProcessKey | None = None,
    ) -> Appended:
        """Append a record; returns once it is committed. ``key``: a new process key, whose
        certificate this record is; its batch is signed with it, and every later one."""
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        # Encoded here, in the caller's task: the writer holds the lock only to seal records.
        self._queue.append(_Job(PreparedRecord(step, actor, body), then, what, future, key))
        if self._task is None or self._stopping:  # not started, or stopping: write inline
            await self._write(self._take())
        else:
            self._wake.set()
        # shield: a caller that goes away must not cancel the batch it shares with others.
        return await asyncio.shield(future)

    def _take(self) -> list[_Job]:
        batch: list[_Job] = []
        while self._queue and len(batch) < self._max_batch:
            batch.append(self._queue.popleft())
        return batch

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # One turn of the loop: callers that were just answered append again and join
            # this batch, instead of each waiting a whole transaction for the next one.
            await asyncio.sleep(0)
            while self._queue:
                await self._write(self._take())
            if self._stopping:
                return

    async def _write(self, batch: list[_Job]) -> None:
        if not batch:
            return
        try:
            appended = await self._commit(batch, batch[0].what if len(batch) == 1 else None)
        except UnsignedHead as exc:
            try:
                appended = await self._alarm(exc, batch)
            except Exception as failure:
                log.exception("the ledger alarm record could not be written")
                for job in batch:
                    _settle(job.future, exc=failure if isinstance(failure, LedgerError) else exc)
                return
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].future, exc=exc)
                return
            log.warning("a batch of %d ledger appends failed; retrying one by one", len(batch))
            for job in batch:
                await self._write([job])
            return
        for job, where in zip(batch, appended, strict=True):
            _settle(job.future, where)

    async def _alarm(self, exc: UnsignedHead, batch: list[_Job]) -> list[Appended]:
        """Log the alarm and put it on record: the batch that found an unsigned head is
        written after a ``ledger.alarm`` record naming that head, in one signed batch. Nothing
        is chained after the forgery but the record that flags it; ``audit verify`` still
        fails at the forged seq (the forgery stays in the chain: the ledger is append-only).
        """
        log.error("ALARM: %s", exc)
        alarm = PreparedRecord(None, "gateway", LedgerAlarm(found_seq=exc.seq, problem=exc.problem))
        key = next((j.key for j in batch if j.key is not None), self.signer.current)
        async with self._connect("record a ledger alarm") as conn, conn.transaction():
            cur = await conn.execute(_LOCK_HEAD)
            head = await cur.fetchone()
            if head is None or head[0] != exc.seq:
                raise exc  # the head moved on meanwhile: fail this batch; the next checks again
            records = [alarm, *(j.record for j in batch)]
            appended, rows = _seal(records, head, self.signer, key)
            await _insert(conn, rows, copy=False)
            await self._thens(conn, batch, appended[1:])
        self._head = (appended[-1].seq, appended[-1].hash)
        self.signer.current = key
        return appended[1:]

    async def _commit(self, batch: list[_Job], what: str | None) -> list[Appended]:
        records = [j.record for j in batch]
        # A certificate job switches the key from its own batch on (never earlier: the
        # verifier must read a key's certificate before its first signature ends).
        key = next((j.key for j in batch if j.key is not None), self.signer.current)
        appended = await self._commit_with(batch, records, what, key)
        self.signer.current = key
        return appended

    async def _commit_with(
        self, batch: list[_Job], records: list[PreparedRecord], what: str | None, key: Any
    ) -> list[Appended]:
        async with self._connect(what or "append ledger records") as conn:
            if len(batch) >= COPY_MIN:
                # Large batch: COPY (less work per row); round trips matter less here.
                async with conn.transaction():
                    appended = await append_records(conn, records, self.signer, copy=True, key=key)
                    await self._thens(conn, batch, appended)
                self._head = (appended[-1].seq, appended[-1].hash)
                return appended
            if self._skip_known_head:
                self._skip_known_head -= 1
            elif self._head is not None and self._expect_available:
                try:
                    appended = await self._commit_on_head(conn, batch, records, self._head, key)
                except _HeadMoved:
                    self._skip_known_head = SKIP_AFTER_MISS
                else:
                    self._head = (appended[-1].seq, appended[-1].hash)
                    return appended
            # Small batch, two round trips: BEGIN with lock and head (a simple query may hold
            # several statements), then INSERT, the callers' statements and COMMIT pipelined.
            # The lock is held for about one round trip.
            try:
                cur = await conn.execute(f"BEGIN; {_LOCK_HEAD}")
                cur.nextset()
                head = await cur.fetchone()
                await self.signer.check_head(conn, head)
                appended, rows = _seal(records, head, self.signer, key)
                async with conn.pipeline():
                    await _insert(conn, rows, copy=False)
                    await self._thens(conn, batch, appended)
                    await conn.execute("COMMIT")
            except BaseException:
                await _rollback(conn)
                raise
            self._head = (appended[-1].seq, appended[-1].hash)
            return appended

    async def _commit_on_head(
        self,
        conn: Conn,
        batch: list[_Job],
        records: list[PreparedRecord],
        head: tuple[int, str],
        key: ProcessKey | None,
    ) -> list[Appended]:
        """One round trip: BEGIN, lock and check the head, INSERT, the callers' statements,
        COMMIT, all pipelined. Sealed on the head our last commit left; if another writer
        appended since, ``ledger_lock_expect`` raises before anything is written and the
        transaction is rolled back (``_HeadMoved``: the caller takes the two-trip path).
        """
        appended, rows = _seal(records, head, self.signer, key)
        # No server-side prepared statements in this pipeline: when a statement fails, psycopg
        # does not see the results of those queued after it, and its cache of prepared names
        # would go out of step with the server ("prepared statement _pg3_0 does not exist").
        threshold, conn.prepare_threshold = conn.prepare_threshold, None
        try:
            async with conn.pipeline():
                await conn.execute("BEGIN")
                await conn.execute("SELECT ledger_lock_expect(%s, %s)", head)
                await _insert(conn, rows, copy=False)
                await self._thens(conn, batch, appended)
                await conn.execute("COMMIT")
        except psycopg.Error as exc:
            await _rollback(conn)
            if exc.sqlstate == HEAD_MOVED:
                raise _HeadMoved from None
            if "ledger_lock_expect" in str(exc) and isinstance(
                exc, (psycopg.errors.UndefinedFunction, psycopg.errors.InsufficientPrivilege)
            ):
                # A database migrated by an older version: append as before (two round trips).
                log.warning("ledger_lock_expect() is unavailable; run the gateway migration")
                self._expect_available = False
                raise _HeadMoved from None
            raise
        except BaseException:
            await _rollback(conn)
            raise
        finally:
            conn.prepare_threshold = threshold
        return appended

    @staticmethod
    async def _thens(conn: Conn, batch: list[_Job], appended: list[Appended]) -> None:
        """The callers' own statements (session rows), in the same transaction."""
        for job, where in zip(batch, appended, strict=True):
            if job.then is not None:
                await job.then(conn, where)


async def _rollback(conn: Conn) -> None:
    """Leave no transaction open on a pooled connection (a broken one is discarded anyway)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.closed:
        with contextlib.suppress(psycopg.Error):
            await conn.execute("ROLLBACK")


def _settle(
    future: asyncio.Future[Appended], value: Appended | None = None, exc: Exception | None = None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert value is not None
        future.set_result(value)
