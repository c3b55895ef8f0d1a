"""The gateway-side ledger stream (``siem_stream:`` in the gateway settings; off by default).

A background task of the gateway process: it reads the ledger after the cursor straight from
the gateway database and hands each batch to the same pump as ``airflow-hoop audit stream``
(chain check, OCSF or raw, sink, durable cursor), in a worker thread so the event loop never
waits on a sink. Of several worker processes on one host, the one holding the cursor's lock
streams; the others check again after ``retry_seconds``. Failures are logged and retried from
the cursor: the gateway keeps serving whatever the sink does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from airflow_hoop.errors import ChainBrokenError, ConfigError, HoopError
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.ledger.checkpoint import PublicKeySet
from airflow_hoop.stream.pump import StreamPump
from airflow_hoop.stream.settings import StreamSettings

log = logging.getLogger(__name__)


class LedgerRow(NamedTuple):
    seq: int
    hash: str
    data: bytes


class SiemStream:
    """Follows the ledger in the background while the gateway runs."""

    def __init__(
        self,
        settings: StreamSettings | None,
        store: GatewayStore,
        public_keys: Callable[[], Awaitable[PublicKeySet]] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        #: the checkpoint key, read from Vault (signed_only): never from the database
        self.public_keys = public_keys
        self._task: asyncio.Task[None] | None = None
        self.pump: StreamPump | None = None
        # A cancelled await leaves its thread running: the sink is closed only between batches.
        self._busy = threading.Lock()

    def start(self) -> None:
        if self.settings is None or not self.settings.enabled:
            return
        self._task = asyncio.create_task(self._loop(self.settings), name="siem-stream")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        pump, self.pump = self.pump, None
        if pump is not None:
            await asyncio.to_thread(self._locked, pump.close)

    async def _loop(self, settings: StreamSettings) -> None:
        while True:
            try:
                if self.pump is None:
                    keys = None
                    if settings.signed_only and self.public_keys is not None:
                        keys = await self.public_keys()
                    self.pump = await asyncio.to_thread(settings.pump, None, keys)
                    log.info("SIEM stream: following the ledger after seq %d", self.pump.seq)
                rows = await self._read(self.pump.read_after, settings.batch_size)
                if rows:
                    await asyncio.to_thread(self._locked, self.pump.push, rows)
                if len(rows) < settings.batch_size:  # at the head: wait for more
                    await asyncio.sleep(settings.poll_seconds)
            except asyncio.CancelledError:
                raise
            except ChainBrokenError as exc:
                log.error("SIEM stream stopped at a broken chain (retried): %s", exc)
                await asyncio.sleep(settings.retry_seconds)
            except ConfigError as exc:  # another process holds the cursor, or it is unreadable
                log.warning("SIEM stream not running in this process: %s", exc)
                await asyncio.sleep(settings.retry_seconds)
            except HoopError as exc:
                log.error("SIEM stream: delivery failed (retried from the cursor): %s", exc)
                await asyncio.sleep(settings.retry_seconds)
            except Exception:
                log.exception("SIEM stream failed (retried from the cursor)")
                await asyncio.sleep(settings.retry_seconds)

    def _locked(self, fn: Callable[..., None], *args: object) -> None:
        with self._busy:
            fn(*args)

    async def _read(self, after_seq: int, limit: int) -> list[LedgerRow]:
        async with self.store.connection("stream the ledger to a SIEM") as conn:
            cur = await conn.execute(
                "SELECT seq, hash, body FROM ledger WHERE seq > %s ORDER BY seq LIMIT %s",
                (after_seq, limit),
            )
            rows = await cur.fetchall()
        return [LedgerRow(seq, digest, body.encode()) for seq, digest, body in rows]
