"""Live step contexts: one dynamic database user and one open connection per (step, connection,
mode).

The mode is ``read`` (the connection's ``vault_read_role`` user, every statement in a read-only
transaction: unapproved commands under a ``required_for: writes`` rule) or ``write`` (the
``vault_role`` user: approved commands, and every command of a connection without such a rule).
A step holds at most one context of each mode per connection; both are released at its end.

A shell (``custom``) connection's context holds a shell runner instead, and a database user
only when the connection names a ``database`` (exported to the command as ``PG*`` variables).

A step's first statement on a connection issues its credential (recorded in the ledger
before the credential is used). The context lives until the step ends, goes idle, its lease
nears expiry, or the gateway stops; each release revokes the user and is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Literal, Protocol

from airflow_hoop.errors import HoopError, LedgerError
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.gateway.execution.runners.postgres import PostgresRunner
from airflow_hoop.gateway.execution.runners.sandbox import Sandbox
from airflow_hoop.gateway.execution.runners.shell import ShellRunner
from airflow_hoop.gateway.execution.step_tenure import StepTenure
from airflow_hoop.gateway.settings import GatewaySettings, PostgresConnection, ShellConnection
from airflow_hoop.gateway.vault import GatewayVaultClient, StepCredential
from airflow_hoop.ledger.correlation import StatementTag, application_name
from airflow_hoop.ledger.records import CredentialIssued, CredentialRevoked, StepRef

log = logging.getLogger(__name__)

ReleaseReason = Literal["step-end", "expired", "error", "shutdown", "token-revoked"]
#: (step key, connection name, read-only?)
ContextKey = tuple[str, str, bool]
Connection = PostgresConnection | ShellConnection

#: How long a release waits for a running statement to stop after cancelling it.
_RELEASE_WAIT_SECONDS = 10.0


class StepContext:
    """A step's credential and runner on one target connection (a shell may have no credential)."""

    def __init__(
        self,
        step: StepRef,
        connection: Connection,
        credential: StepCredential | None,
        runner: PostgresRunner | ShellRunner,
        *,
        read_only: bool = False,
    ) -> None:
        self.step = step
        #: Runs only in read-only transactions, as the step's READ user.
        self.read_only = read_only
        self.connection = connection
        self.credential = credential
        self.runner = runner
        # One statement at a time on the connection; queued execs wait here.
        self.lock = asyncio.Lock()
        self.last_used = time.monotonic()
        self.released = False

    @property
    def key(self) -> ContextKey:
        return (self.step.key, self.connection.name, self.read_only)

    def touch(self) -> None:
        self.last_used = time.monotonic()


class ContextTarget(Protocol):
    """A connection as the registry sees it: named, and able to open a step's context on itself.

    ``gateway/targets.py`` implements it for each kind of connection (``open_postgres`` or
    ``open_shell`` below).
    """

    @property
    def name(self) -> str: ...

    async def open_context(
        self, registry: StepRegistry, step: StepRef, *, read_only: bool = False
    ) -> StepContext: ...


class StepRegistry:
    """All live step contexts of this gateway process."""

    def __init__(
        self, settings: GatewaySettings, store: GatewayStore, vault: GatewayVaultClient
    ) -> None:
        self.settings = settings
        self.store = store
        self.vault = vault
        self._contexts: dict[ContextKey, StepContext] = {}
        # Per-key creation locks: two first statements of a step must not mint two users.
        self._creating: dict[ContextKey, asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None
        # Revocations still running after their step's end was answered (``end_step(wait=False)``).
        self._revocations: set[asyncio.Task[None]] = set()
        # Revocations Vault did not confirm: retried by the reaper (revoking is idempotent)
        # and recorded once confirmed; the lease's TTL bounds them if every retry fails.
        self._unconfirmed: dict[str, tuple[StepRef, StepCredential, ReleaseReason]] = {}
        #: Ended steps and which process holds each live step (``gateway_steps``).
        self.tenure = StepTenure(store)

    # -- acquire -----------------------------------------------------------------------------
    async def acquire(
        self,
        step: StepRef,
        target: ContextTarget,
        issued_at: float = 0.0,
        *,
        read_only: bool = False,
    ) -> StepContext:
        """The live context of ``step`` on ``target`` in that mode, issuing a credential if needed.

        ``issued_at``: the caller's identity token's ``iat`` (0: refused by any end).

        Raises StepEndedError (401) for an ended step and StepElsewhereError (409) for a step
        another gateway process holds, each recorded, before any credential is minted.
        """
        key = (step.key, target.name, read_only)
        ctx = self._usable(key)
        if ctx is not None:
            ctx.touch()  # in use from now on: the reaper must not take it as idle
            return ctx
        lock = self._creating.setdefault(key, asyncio.Lock())
        async with lock:
            ctx = self._usable(key)
            if ctx is not None:
                return ctx
            stale = self._contexts.pop(key, None)
            if stale is not None:  # broken connection or lease near expiry: replace it
                await self._release(stale, "expired" if not stale.runner.broken else "error")
            # The claim, in the database, before the mint: it refuses an ended step and a step
            # another process holds in one statement (db/step_claims.py).
            await self.tenure.claim(step, target.name, issued_at)
            ctx = await target.open_context(self, step, read_only=read_only)
            if self.tenure.ended_for(step, issued_at):
                # The step's end arrived (step-end bus) while its credential was being minted;
                # that release did not see this context yet: release it here.
                await self._release(ctx, "step-end")
                raise self.tenure.refused_ended(step)
            self._contexts[key] = ctx
            return ctx

    def in_transaction(self, step: StepRef, connection: str, *, read_only: bool) -> bool:
        """Has the step's live context of that mode a transaction open (COMMIT goes there)?"""
        ctx = self._usable((step.key, connection, read_only))
        return ctx is not None and ctx.runner.in_transaction

    def _usable(self, key: ContextKey) -> StepContext | None:
        ctx = self._contexts.get(key)
        if ctx is None or ctx.released or ctx.runner.broken:
            return None
        cred = ctx.credential
        if cred and cred.expires_at - time.time() < self.settings.lease_expiry_margin_seconds:
            return None
        return ctx

    async def open_postgres(
        self, step: StepRef, connection: PostgresConnection, *, read_only: bool = False
    ) -> StepContext:
        """A new context on a target database: the step's dynamic user, connected.

        ``read_only``: the READ user, and a runner that runs nothing outside a read-only
        transaction it opened itself (``PostgresRunner``).
        """
        cred = await self.vault.issue_step_credential(step, connection, read_only=read_only)
        # The record and the login side by side: logging in runs nothing, and no statement
        # runs before both are done (the record durable, the connection open).
        recorded = asyncio.ensure_future(self._record_issued(step, connection.name, cred))
        try:
            runner = await PostgresRunner.connect(
                connection,
                cred.username,
                cred.password,
                max_rows=self.settings.max_result_rows,
                max_output=self.settings.max_output_bytes,
                connect_timeout=self.settings.target_connect_timeout_seconds,
                read_only=read_only,
                # The step in the database's own views and logs (docs/correlation.md).
                application_name=application_name(step.key),
                tag=StatementTag.for_step(step),
                step_key=step.key,
            )
        except HoopError:
            try:
                await recorded
            except LedgerError:
                # The root cause (the login may have failed only because the unrecorded
                # credential was being revoked): report the ledger, not the target.
                raise
            await self._revoke_and_record(step, cred, "error")
            raise
        try:
            await recorded
        except LedgerError:  # not recorded, already revoked: the connection must not be used
            with contextlib.suppress(Exception):
                await runner.close()
            raise
        return StepContext(step, connection, cred, runner, read_only=read_only)

    async def open_shell(
        self, step: StepRef, connection: ShellConnection, database: PostgresConnection | None
    ) -> StepContext:
        """A new context on a shell connection, with the step's user of ``database`` if any."""
        Sandbox(connection)  # refused (no sandbox here, no user switch) before any credential
        cred = None
        if database is not None:
            # Issued under the shell connection's name: the token and the records say which
            # gateway connection the user is for; the role is the database connection's.
            cred = await self.vault.issue_step_credential(
                step, database.model_copy(update={"name": connection.name})
            )
            await self._record_issued(step, connection.name, cred)
        try:
            runner = ShellRunner(
                connection,
                max_output=self.settings.max_output_bytes,
                credential=cred,
                database=database,
                application_name=application_name(step.key) if cred is not None else None,
            )
        except HoopError:
            if cred is not None:
                await self._revoke_and_record(step, cred, "error")
            raise
        return StepContext(step, connection, cred, runner)

    async def _record_issued(self, step: StepRef, connection: str, cred: StepCredential) -> None:
        try:
            # Recorded before first use: a credential nobody knows about never runs anything.
            await self.store.append(
                step,
                step.key,
                CredentialIssued(
                    connection=connection,
                    lease_id=cred.lease_id,
                    db_user=cred.username,
                    vault_role=cred.vault_role,
                    ttl_seconds=cred.ttl,
                ),
            )
        except LedgerError:
            await self._revoke_quietly(cred, step)
            raise

    # -- release -----------------------------------------------------------------------------
    async def end_step(self, step: StepRef, *, wait: bool = True) -> list[str]:
        """Release every context of ``step``; returns the revoked database users.

        On return the step's target connections are closed. With ``wait`` its users are also
        revoked in Vault and recorded; without, that happens right after in the background
        (``revocations_pending``), saving the caller the Vault round trips. A gateway that dies
        in between leaves the lease to its TTL and to the recovery sweep.
        """
        self.tenure.note_end(step)  # before releasing: a context being minted now sees it
        victims = [c for k, c in list(self._contexts.items()) if k[0] == step.key]
        return await self._release_all(victims, "step-end", revoke_later=not wait)

    async def release_step(self, step: StepRef, reason: ReleaseReason) -> list[str]:
        """Release what this process holds for ``step`` without ending it (a resumed task may
        log in again); the users are revoked and recorded in the background."""
        victims = [c for k, c in list(self._contexts.items()) if k[0] == step.key]
        return await self._release_all(victims, reason, revoke_later=True)

    async def release_all(self, reason: ReleaseReason = "shutdown") -> list[str]:
        released = await self._release_all(list(self._contexts.values()), reason)
        await self.revocations_finished()
        return released

    def revocations_pending(self) -> int:
        """Revocations started by ``end_step(wait=False)`` that have not finished yet."""
        return len(self._revocations)

    async def revocations_finished(self) -> None:
        """Wait for every background revocation (each records its own outcome)."""
        while self._revocations:
            await asyncio.wait(set(self._revocations))

    async def _release_all(
        self, victims: Iterable[StepContext], reason: ReleaseReason, *, revoke_later: bool = False
    ) -> list[str]:
        released: list[str] = []
        for ctx in victims:
            if self._contexts.get(ctx.key) is ctx:
                del self._contexts[ctx.key]
            if await self._release(ctx, reason, revoke_later) and ctx.credential is not None:
                released.append(ctx.credential.username)
        return released

    async def _release(
        self, ctx: StepContext, reason: ReleaseReason, revoke_later: bool = False
    ) -> bool:
        """Stop using the context, revoke its user and record it. False if already done."""
        if ctx.released:
            return False
        ctx.released = True
        if ctx.lock.locked():
            # A statement is running: the step ended (or its lease is gone), so stop it.
            with contextlib.suppress(Exception):
                await ctx.runner.cancel()
        try:
            await asyncio.wait_for(ctx.lock.acquire(), _RELEASE_WAIT_SECONDS)
            locked = True
        except asyncio.TimeoutError:
            locked = False  # revoke anyway: the revocation statements end the session
        try:
            with contextlib.suppress(Exception):
                await ctx.runner.close()
            if ctx.credential is not None and revoke_later:
                task = asyncio.create_task(
                    self._revoke_and_record(ctx.step, ctx.credential, reason),
                    name=f"revoke-{ctx.credential.username}",
                )
                self._revocations.add(task)
                task.add_done_callback(self._revocation_done)
            elif ctx.credential is not None:
                await self._revoke_and_record(ctx.step, ctx.credential, reason)
        finally:
            if locked:
                ctx.lock.release()
        return True

    async def _revoke_and_record(
        self, step: StepRef, cred: StepCredential, reason: ReleaseReason
    ) -> None:
        # Only a revocation Vault confirmed is recorded: a failed one leaves the lease open in
        # the ledger (issued, never revoked) until its TTL, which is what really happens.
        if await self._revoke_quietly(cred, step):
            await self._record_revoked(step, cred, reason)
        else:
            self._unconfirmed[cred.lease_id] = (step, cred, reason)

    async def retry_unconfirmed(self) -> list[str]:
        """Revoke again what Vault did not confirm; record each confirmed one. Returns users."""
        confirmed = []
        for lease_id, (step, cred, reason) in list(self._unconfirmed.items()):
            try:
                await self.vault.revoke_lease(lease_id)
            except HoopError as exc:
                log.warning("revoking %s again failed (next reaper round): %s", cred.username, exc)
                continue
            del self._unconfirmed[lease_id]
            await self._record_revoked(step, cred, reason)
            confirmed.append(cred.username)
        return confirmed

    def _revocation_done(self, task: asyncio.Task[None]) -> None:
        self._revocations.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background revocation failed", exc_info=task.exception())

    async def _revoke_quietly(self, cred: StepCredential, step: StepRef) -> bool:
        try:
            await self.vault.revoke(cred, step)
        except HoopError as exc:
            # The lease still expires on its own; say so loudly, the caller cannot fix it.
            log.error(
                "could not revoke %s (lease %s; it expires after its TTL of %ss): %s",
                cred.username,
                cred.lease_id,
                cred.ttl,
                exc,
            )
            return False
        return True

    async def _record_revoked(
        self, step: StepRef, cred: StepCredential, reason: ReleaseReason
    ) -> None:
        actor = step.key if reason == "step-end" else "gateway"
        try:
            await self.store.append(
                step,
                actor,
                CredentialRevoked(
                    connection=cred.connection,
                    lease_id=cred.lease_id,
                    db_user=cred.username,
                    reason=reason,
                ),
            )
        except LedgerError as exc:
            log.error("could not record the revocation of %s: %s", cred.username, exc)

    # -- reaper ------------------------------------------------------------------------------
    def start_reaper(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever(), name="step-reaper")

    async def stop_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval_seconds)
            try:
                await self.reap()
            except Exception:  # the reaper must survive one bad round
                log.exception("step reaper round failed")

    async def reap(self) -> list[str]:
        """Release contexts idle too long or whose lease is about to expire."""
        now_mono, now = time.monotonic(), time.time()
        victims = []
        for ctx in list(self._contexts.values()):
            idle_for = now_mono - ctx.last_used
            idle = not ctx.lock.locked() and idle_for > self.settings.step_idle_seconds
            expires_at = ctx.credential.expires_at if ctx.credential else float("inf")
            expiring = expires_at - now < self.settings.lease_expiry_margin_seconds
            # A busy context is left alone until its lease is really gone.
            if idle or (expiring and (not ctx.lock.locked() or expires_at < now)):
                victims.append(ctx)
        released = await self._release_all(victims, "expired")
        # A step this process holds nothing for any more may go to another process.
        gone = {c.step.key for c in victims} - {k[0] for k in self._contexts}
        if gone:
            try:
                await self.tenure.claims.release(sorted(gone))
            except LedgerError as exc:  # the claim stays until this process stops
                log.warning("could not release idle steps' claims: %s", exc)
        if self._unconfirmed:
            await self.retry_unconfirmed()
        return released

    def contexts(self) -> list[StepContext]:
        return list(self._contexts.values())
