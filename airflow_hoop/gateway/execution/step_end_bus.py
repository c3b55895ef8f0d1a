"""A step's end, told to every gateway process sharing the database (Postgres LISTEN/NOTIFY).

A step's contexts live in the process that served its statements. With several worker
processes on one socket (``--workers N``) or several replicas, ``POST /steps/end`` may reach a
process that holds nothing for the step: the users held elsewhere would then wait for the idle
reaper (``step_idle_seconds``, 10 minutes by default). bench/load.py found exactly that (one
user of 216 left after a 240-task run with two workers). So the process that receives the end
also publishes it; every process (itself included: a no-op there) releases what it holds.

Best effort on top of the local release, never instead of it: when the database cannot be
reached the end is still done locally, the failure is logged, and the idle reaper and lease
expiry remain the backstop. The listener reconnects on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from pydantic import ValidationError

from airflow_hoop.errors import HoopError
from airflow_hoop.gateway.execution.steps import StepRegistry
from airflow_hoop.ledger.records import StepRef

log = logging.getLogger(__name__)

CHANNEL = "airflow_hoop_step_end"
_RECONNECT_S = 2.0


class StepEndBus:
    """Publishes step ends and releases the local contexts of steps other processes ended."""

    def __init__(self, dsn: str, registry: StepRegistry) -> None:
        self._dsn = dsn
        self._registry = registry
        self._listener: asyncio.Task[None] | None = None
        self._publisher: psycopg.AsyncConnection[object] | None = None
        self._lock = asyncio.Lock()
        self.received = 0  # ends published by any process (for tests and diagnostics)

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen_forever(), name="step-end-listener")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._publisher is not None:
            with contextlib.suppress(psycopg.Error):
                await self._publisher.close()

    async def publish(self, step: StepRef) -> None:
        """Tell every process that ``step`` ended; logs (never raises) when it cannot."""
        payload = step.model_dump_json()
        try:
            async with self._lock:
                if self._publisher is None or self._publisher.closed:
                    self._publisher = await psycopg.AsyncConnection.connect(
                        self._dsn, autocommit=True
                    )
                await self._publisher.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        except psycopg.Error as exc:
            log.warning(
                "could not tell other gateway processes that step %s ended (%s); what they "
                "hold for it is released by their idle reaper",
                step.key,
                type(exc).__name__,
            )

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    # Ends told while this listener was away (or before this process
                    # started) are in the table: read them once listening.
                    await self._load_ended()
                    async for note in conn.notifies():
                        await self._on_end(note.payload)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("step-end listener lost the gateway database (%s)", type(exc).__name__)
            await asyncio.sleep(_RECONNECT_S)

    async def _load_ended(self) -> None:
        try:
            await self._registry.tenure.load_ended()
        except HoopError as exc:
            log.warning("could not read the ended steps (%s); checked per step instead", exc)

    async def _on_end(self, payload: str) -> None:
        self.received += 1
        try:
            step = StepRef.model_validate_json(payload)
        except ValidationError:
            log.warning("ignored a malformed step-end notification")
            return
        try:
            await self._registry.end_step(step, wait=False)
        except Exception:  # one step's release must not stop the listener
            log.exception("releasing step %s after its end elsewhere failed", step.key)
