"""What a gateway that died left behind: closed, revoked and recorded by a live one.

A gateway killed with SIGKILL (or whose host vanished) records nothing on its way out: its
sessions stay ``open``, its step credentials stay valid until their leases expire, and a shell
command it started keeps running. Every gateway process therefore

- registers itself in ``gateway_instances`` (an id per process, its host and PID) and
  heartbeats that row every ``recovery.heartbeat_seconds``, by the database's clock;
- tags each session row it opens, and each lease it is issued (``gateway_leases``, written in
  the same transaction as the ``credential.issued`` record), with its id;
- sweeps at startup and every heartbeat interval: an instance whose heartbeat is older than
  its own declared ``recovery.stale_after_seconds`` (or the sweeper's, whichever is longer:
  replicas configured differently never fence each other early), or whose PID is gone on this very host, is declared dead and
  fenced (``stopped_at``); then every open session of a fenced instance gets a
  ``session.result`` record with status ``interrupted``, every unrevoked lease of one is
  revoked in Vault and recorded (``credential.revoked``, reason ``interrupted``), and shell
  processes it started on this host are killed (``execution/runners/strays.py``).

Sessions of live instances are never touched, so several workers or replicas share one
database safely. A fenced instance that was only stalled finds out at its next heartbeat and
stops at once; a result it would still write is refused by the database (a session is closed
once: ``sessions_close_once``). See docs/faults.md for the guarantees and their bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from pydantic import BaseModel, Field

from airflow_hoop.errors import HoopError, LedgerError
from airflow_hoop.gateway.db.store import GatewayStore, SessionEnd
from airflow_hoop.gateway.execution.runners.strays import kill_marked
from airflow_hoop.ledger.canonical import sha256_hex
from airflow_hoop.ledger.records import (
    CredentialRevoked,
    LedgerRecord,
    SessionResult,
    StepRef,
)

if TYPE_CHECKING:
    from airflow_hoop.gateway.settings import RecoverySettings
    from airflow_hoop.gateway.vault import GatewayVaultClient

log = logging.getLogger(__name__)

#: Session-level advisory lock: one sweep at a time across every gateway process.
SWEEP_LOCK_KEY = 0x686F6F7073776570  # "hoopswep"
#: hoop's "no exit code" (kills and interruptions).
_NO_EXIT_CODE = -2


class SweepReport(BaseModel):
    """What one sweep found and did (ids only)."""

    skipped: bool = Field(False, description="another process was sweeping")
    declared_dead: list[str] = Field(default_factory=list)
    sessions_closed: list[str] = Field(default_factory=list)
    leases_revoked: list[str] = Field(default_factory=list)
    leases_pending: list[str] = Field(
        default_factory=list, description="could not be revoked now (Vault down): next sweep"
    )
    processes_killed: int = 0


class _Instance(BaseModel):
    id: str
    host_key: str
    pid: int
    proc_start: int | None
    stale: bool


class _OpenSession(BaseModel):
    id: uuid.UUID
    instance_id: str | None
    connection: str
    start_date: datetime


class _OpenLease(BaseModel):
    lease_id: str
    instance_id: str
    connection: str
    db_user: str
    step: dict[str, Any] | None


class GatewayRecovery:
    """This process's heartbeat, and the sweep of what dead gateway processes left behind."""

    def __init__(
        self,
        settings: RecoverySettings,
        store: GatewayStore,
        vault: GatewayVaultClient,
        is_running: Callable[[uuid.UUID], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.vault = vault
        # This process's own sessions that are open but no longer running lost their result
        # (the database was down when they ended): closed too, once older than stale_after.
        self._is_running = is_running
        self.instance = store.instance_id
        self.host = host_key()
        # Separate tasks: a slow sweep (Vault timeouts) must never delay the heartbeat, or this
        # process could be declared dead by another.
        self._heartbeats: asyncio.Task[None] | None = None
        self._sweeps: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> SweepReport | None:
        """Register this process, sweep once, then heartbeat and sweep periodically."""
        try:
            async with self.store.connection("register the gateway instance") as conn:
                await conn.execute(
                    "INSERT INTO gateway_instances "
                    "(id, host_key, pid, proc_start, stale_after_seconds) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (
                        self.instance,
                        self.host,
                        os.getpid(),
                        process_start(os.getpid()),
                        self.settings.stale_after_seconds,
                    ),
                )
        except LedgerError as exc:
            if "UndefinedTable" not in exc.what:
                raise
            raise LedgerError(
                "the gateway database has no recovery tables (gateway_instances): its schema "
                "predates this gateway version",
                "apply the schema again as the database owner "
                "(airflow_hoop.gateway.db.schema.migrate; idempotent), then start the gateway",
            ) from None
        self._heartbeats = asyncio.create_task(self._beat(), name="gateway-heartbeat")
        report = await self._sweep_quietly()
        self._sweeps = asyncio.create_task(self._sweep_forever(), name="gateway-sweep")
        return report

    async def stop(self) -> None:
        """Stop sweeping (shutdown begins); the heartbeat goes on until ``mark_stopped``."""
        await _cancel(self._sweeps)
        self._sweeps = None

    async def mark_stopped(self) -> None:
        """A clean stop, after this process finished its sessions: stop heartbeating, and let
        whatever it still had open be swept at once."""
        await _cancel(self._heartbeats)
        self._heartbeats = None
        with contextlib.suppress(LedgerError):
            async with self.store.connection("mark the gateway instance stopped") as conn:
                await conn.execute(
                    "UPDATE gateway_instances SET stopped_at = now() "
                    "WHERE id = %s AND stopped_at IS NULL",
                    (self.instance,),
                )

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self.heartbeat()
            except LedgerError as exc:  # the database is down: nobody can sweep us either
                log.warning("gateway heartbeat failed: %s", exc)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            await self._sweep_quietly()

    async def heartbeat(self) -> None:
        async with self.store.connection("heartbeat") as conn:
            cur = await conn.execute(
                "UPDATE gateway_instances SET heartbeat_at = now() "
                "WHERE id = %s AND stopped_at IS NULL",
                (self.instance,),
            )
            fenced = cur.rowcount == 0
        if fenced:
            # Another process declared us dead and closed our sessions: going on would run
            # commands nobody sweeps. Stop now; the supervisor starts a fresh instance.
            log.critical(
                "[recovery] gateway instance %s was declared dead by another gateway (its "
                "heartbeat was late by more than %.0fs) and stops now. Fix: restart it; "
                "raise recovery.stale_after_seconds if the database or host stalls that long",
                self.instance,
                self.settings.stale_after_seconds,
            )
            os.kill(os.getpid(), signal.SIGKILL)

    async def _sweep_quietly(self) -> SweepReport | None:
        try:
            report = await self.sweep()
        except HoopError as exc:
            log.error("recovery sweep failed (next try after the next heartbeat): %s", exc)
            return None
        except Exception:  # the sweep must survive one bad round
            log.exception("recovery sweep failed unexpectedly (next try after the next heartbeat)")
            return None
        if report.declared_dead or report.sessions_closed or report.leases_revoked:
            log.warning("recovery sweep: %s", report.model_dump_json())
        return report

    # -- the sweep ---------------------------------------------------------------------------
    async def sweep(self) -> SweepReport:
        """Declare dead instances, then close their sessions and revoke their leases."""
        async with self.store.connection("sweep interrupted sessions") as conn:
            # A sweeper that freezes while it holds the lock (a stalled process is exactly
            # what the sweep is for) must not block every other sweep: the server ends a
            # session idle that long, which releases the lock.
            idle_ms = str(int(self.settings.stale_after_seconds * 1000))
            cur = await conn.execute(
                "SELECT set_config('idle_session_timeout', %s, false), pg_try_advisory_lock(%s)",
                (idle_ms, SWEEP_LOCK_KEY),
            )
            row = await cur.fetchone()
            try:
                if not row or not row[1]:
                    return SweepReport(skipped=True)
                try:
                    return await self._sweep(conn)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (SWEEP_LOCK_KEY,))
            finally:
                await conn.execute("RESET idle_session_timeout")  # a pooled connection again

    async def _sweep(self, conn: psycopg.AsyncConnection[Any]) -> SweepReport:
        report = SweepReport()
        dead = [i for i in await self._candidates(conn) if i.stale or self._gone_here(i)]
        if dead:
            await conn.execute(
                "UPDATE gateway_instances SET stopped_at = now(), swept_by = %s "
                "WHERE id = ANY(%s) AND stopped_at IS NULL",
                (self.instance, [i.id for i in dead]),
            )
            report.declared_dead = [i.id for i in dead]
            local = [i.id for i in dead if i.host_key == self.host]
            for dead_id in local:  # its shell commands: only this host can see them
                killed = await asyncio.to_thread(kill_marked, f"{dead_id}:")
                report.processes_killed += len(killed)
        for session in await self._open_sessions(conn):
            if await self._close(conn, session):
                report.sessions_closed.append(str(session.id))
        for session in await self._own_orphans(conn):
            if await self._close(conn, session, lost=True):
                report.sessions_closed.append(str(session.id))
        for lease in await self._open_leases(conn):
            if await self._revoke(lease):
                report.leases_revoked.append(lease.lease_id)
            else:
                report.leases_pending.append(lease.lease_id)
        return report

    async def _candidates(self, conn: psycopg.AsyncConnection[Any]) -> list[_Instance]:
        cur = await conn.execute(
            "SELECT id, host_key, pid, proc_start, "
            "heartbeat_at < now() - make_interval(secs => "
            "GREATEST(stale_after_seconds, %s)) AS stale "
            "FROM gateway_instances WHERE stopped_at IS NULL AND id <> %s",
            (self.settings.stale_after_seconds, self.instance),
        )
        names = ("id", "host_key", "pid", "proc_start", "stale")
        return [_Instance(**dict(zip(names, r, strict=True))) for r in await cur.fetchall()]

    def _gone_here(self, instance: _Instance) -> bool:
        """On this host, a process that is gone (or whose PID was reused) is dead now."""
        if instance.host_key != self.host:
            return False
        return process_start(instance.pid) != instance.proc_start

    async def _open_sessions(self, conn: psycopg.AsyncConnection[Any]) -> list[_OpenSession]:
        # Sessions of fenced instances; rows without a known instance (written before the
        # recovery schema, or by a replica that never registered) once older than stale_after.
        cur = await conn.execute(
            "SELECT s.id, s.instance_id, s.connection, s.start_date FROM sessions s "
            "LEFT JOIN gateway_instances i ON i.id = s.instance_id "
            "WHERE s.status = 'open' AND s.instance_id IS DISTINCT FROM %s AND "
            "(i.stopped_at IS NOT NULL OR (i.id IS NULL AND "
            " s.start_date < now() - make_interval(secs => %s))) ORDER BY s.start_date",
            (self.instance, self.settings.stale_after_seconds),
        )
        names = ("id", "instance_id", "connection", "start_date")
        return [_OpenSession(**dict(zip(names, r, strict=True))) for r in await cur.fetchall()]

    async def _own_orphans(self, conn: psycopg.AsyncConnection[Any]) -> list[_OpenSession]:
        if self._is_running is None:
            return []
        cur = await conn.execute(
            "SELECT id, instance_id, connection, start_date FROM sessions "
            "WHERE status = 'open' AND instance_id = %s "
            "AND start_date < now() - make_interval(secs => %s) ORDER BY start_date",
            (self.instance, self.settings.stale_after_seconds),
        )
        names = ("id", "instance_id", "connection", "start_date")
        rows = [_OpenSession(**dict(zip(names, r, strict=True))) for r in await cur.fetchall()]
        return [r for r in rows if not self._is_running(r.id)]

    async def _open_leases(self, conn: psycopg.AsyncConnection[Any]) -> list[_OpenLease]:
        cur = await conn.execute(
            "SELECT l.lease_id, l.instance_id, l.connection, l.db_user, l.step "
            "FROM gateway_leases l JOIN gateway_instances i ON i.id = l.instance_id "
            "WHERE l.revoked_at IS NULL AND i.stopped_at IS NOT NULL AND i.id <> %s "
            "ORDER BY l.issued_at",
            (self.instance,),
        )
        names = ("lease_id", "instance_id", "connection", "db_user", "step")
        return [_OpenLease(**dict(zip(names, r, strict=True))) for r in await cur.fetchall()]

    async def _close(
        self, conn: psycopg.AsyncConnection[Any], session: _OpenSession, *, lost: bool = False
    ) -> bool:
        """Record the session's end as ``interrupted``; False if it was closed meanwhile.

        ``lost``: a session of this very process whose result could not be recorded when it
        ended (the gateway database was unreachable then).
        """
        cur = await conn.execute(
            "SELECT kind, body FROM ledger WHERE session_id = %s "
            "AND kind IN ('session.intent', 'session.result') ORDER BY seq",
            (str(session.id),),
        )
        records = {kind: body for kind, body in await cur.fetchall()}
        intent = records.get("session.intent")
        whose = session.instance_id or "an unregistered gateway"
        if lost:
            why = (
                "its result could not be recorded when it ended (the gateway database was "
                "unreachable); its outcome is unknown"
            )
        else:
            why = (
                f"the gateway process {whose} stopped (declared dead) while the command ran; "
                "its outcome is unknown"
            )
        note = f"[gateway] interrupted: {why}; closed by the recovery sweep\n"
        end = SessionEnd(
            exit_code=_NO_EXIT_CODE, output_status="failed", output=note, truncated=False
        )
        if intent is None or "session.result" in records:
            # No intent: nothing could have run (the row and the intent commit together).
            await self.store.mark_session_done(session.id, end)
            return False
        step = LedgerRecord.model_validate_json(intent).step
        assert step is not None  # every intent names its step
        body = SessionResult(
            session_id=str(session.id),
            connection=session.connection,
            status="interrupted",
            exit_code=_NO_EXIT_CODE,
            output_sha256=sha256_hex(note),
            duration_ms=0.0,  # unknown: the process that timed it is gone
            error=f"{why}. Closed by {self.instance}",
        )
        try:
            await self.store.finish_session(session.id, end, step, "gateway", body)
        except LedgerError as exc:
            if "already closed" in exc.what:
                return False
            raise
        return True

    async def _revoke(self, lease: _OpenLease) -> bool:
        try:
            await self.vault.revoke_lease(lease.lease_id)
        except HoopError as exc:
            # The lease still expires by itself (its TTL is the bound); try again next sweep.
            log.error("recovery: could not revoke lease of %s: %s", lease.db_user, exc)
            return False
        step = StepRef.model_validate(lease.step) if lease.step else None
        await self.store.append(
            step,
            "gateway",
            CredentialRevoked(
                connection=lease.connection,
                lease_id=lease.lease_id,
                db_user=lease.db_user,
                reason="interrupted",
            ),
        )
        return True


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def host_key() -> str:
    """Which machine and PID namespace this process sees: PIDs compare only within one."""
    boot = _read("/proc/sys/kernel/random/boot_id").strip()
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = "?"
    return f"{socket.gethostname()}|{boot}|{pidns}"


def process_start(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), None if there is no such process."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
