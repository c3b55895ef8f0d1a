"""One governed exec, from acceptance to its result record.

Order is the guarantee: credential issued (and recorded) → intent record + session row in one
transaction → only then the statement runs → result record + session row update in one
transaction. A run that outlives the sync window continues here in the background.
An exec on a shell (``custom``) connection runs the same way; its output is readable while it
runs (``live``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime, timezone
from typing import Any, Protocol

from pydantic import BaseModel, JsonValue

from airflow_hoop.errors import LedgerError
from airflow_hoop.gateway.db.store import GatewayStore, SessionEnd, SessionRow
from airflow_hoop.gateway.execution.runners.outcome import RunOutcome
from airflow_hoop.gateway.execution.runners.output import OutputCapture
from airflow_hoop.gateway.execution.runners.postgres import is_transaction_control
from airflow_hoop.gateway.execution.runners.shell import ShellInvocation, ShellOutcome, ShellRunner
from airflow_hoop.gateway.execution.shell_exec import approval_parameters
from airflow_hoop.gateway.execution.steps import ContextTarget, StepContext, StepRegistry
from airflow_hoop.gateway.masking.engine import ResultMasker
from airflow_hoop.gateway.masking.rules import MaskingPolicy
from airflow_hoop.gateway.masking.service import MaskingService
from airflow_hoop.gateway.masking.stream import StreamMasker
from airflow_hoop.gateway.settings import GatewaySettings
from airflow_hoop.ledger.canonical import canonical, sha256_hex
from airflow_hoop.ledger.commands import parameters_sha256
from airflow_hoop.ledger.records import SessionIntent, SessionResult, StepRef
from airflow_hoop.ledger.sql_label import label_sql
from airflow_hoop.wire.session_settings import SessionSettings
from airflow_hoop.wire.sessions import ExecRequest, ExecResponse, TypedResult
from airflow_hoop.wire.values import encode_value

log = logging.getLogger(__name__)

#: Postgres' SQLSTATE for "canceling statement due to user request".
_QUERY_CANCELED = "57014"
#: hoop's exit code when no exit code could be obtained (used for kills and interruptions).
_NO_EXIT_CODE = -2
#: How long shutdown waits for interrupted statements to record their result.
_SHUTDOWN_WAIT_SECONDS = 10.0


class SessionTarget(ContextTarget, Protocol):
    """A connection as an exec sees it (``gateway/targets.py``): also its masking policy."""

    @property
    def masking(self) -> MaskingPolicy | None: ...


class Finished(BaseModel):
    """A finished exec: the hoop response, or why its result could not be recorded."""

    response: ExecResponse
    ledger_error: str | None = None


class RunningSession:
    """An accepted exec whose statement is queued, running or done."""

    def __init__(
        self, session_id: uuid.UUID, step: StepRef, ctx: StepContext, intent_seq: int
    ) -> None:
        self.session_id = session_id
        self.step = step
        self.ctx = ctx
        self.intent_seq = intent_seq
        self.killed = False
        self.interrupted = False
        self.started = False
        self.task: asyncio.Task[Finished] | None = None
        # Shell commands: the output so far, for GET /api/sessions/{id}[/result/stream].
        self.live: OutputCapture | None = None
        # The connection's masking policy at work on this exec's output (None: no policy).
        self.masker: ResultMasker | None = None
        self.stream_masker: StreamMasker | None = None


class SessionService:
    """Accepts, runs, kills and finishes execs of this gateway process."""

    def __init__(
        self, settings: GatewaySettings, store: GatewayStore, registry: StepRegistry
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self._running: dict[uuid.UUID, RunningSession] = {}
        self.masking = MaskingService(
            registry.vault,
            key_cache_seconds=settings.vault.masking_key_cache_seconds,
            key_location=f"{settings.vault.masking_kv_mount}/{settings.vault.masking_key_path}",
        )

    async def start(
        self,
        step: StepRef,
        target: SessionTarget,
        request: ExecRequest,
        parameters: Any,
        wire_parameters: Any,
        shell: ShellInvocation | None = None,
        issued_at: float = 0.0,
        *,
        read_only: bool = False,
    ) -> RunningSession:
        """Record the intent and start the statement; raises before anything runs on failure.

        ``issued_at``: the caller's identity token's ``iat`` (a step's end refuses older ones).
        ``read_only``: run it as the step's READ user in a read-only transaction (an
        unapproved command under a ``required_for: writes`` rule).
        """
        if read_only and is_transaction_control(request.script):
            # COMMIT/ROLLBACK of the step's approved (read-write) transaction ends it there.
            # Safe: that runner ends its transaction itself and never sends this script.
            read_only = not self.registry.in_transaction(step, target.name, read_only=False)
        try:
            ctx = await self.registry.acquire(step, target, issued_at, read_only=read_only)
        except LedgerError as exc:
            raise LedgerError(f"{exc.what}; the statement was not executed", exc.fix) from None
        # The masking key before anything runs: output that could not be masked must not be
        # produced at all (a VaultError here: 503, nothing executed).
        masker = await self.masking.masker(target.masking)
        session_id = uuid.uuid4()
        params_digest = None if wire_parameters is None else sha256_hex(canonical(wire_parameters))
        if shell is not None:  # a shell command's "parameters": client_args, cwd, environment
            params_digest = parameters_sha256(approval_parameters(request, shell))
        autocommit = bool(request.airflow_hoop and request.airflow_hoop.autocommit)
        session_settings = request.airflow_hoop.session_settings if request.airflow_hoop else None
        intent = SessionIntent(
            session_id=str(session_id),
            connection=target.name,
            script=request.script,
            script_sha256=sha256_hex(request.script),
            parameters_sha256=params_digest,
            parameter_count=0 if wire_parameters is None else len(wire_parameters),
            autocommit=autocommit,
            db_user=ctx.credential.username if ctx.credential else None,
            read_only=True if ctx.read_only else None,
            session_settings=dict(session_settings.items())
            if session_settings is not None
            else None,
            shell=ctx.runner.intent(shell)
            if shell is not None and isinstance(ctx.runner, ShellRunner)
            else None,
            # The label the approval check went by (cached by script text: no second parse).
            label=None
            if shell is not None
            else label_sql(request.script, wire_parameters is not None).label,
            # What the task says of the agent turn behind the call: attributed to its step.
            agent=request.airflow_hoop.agent if request.airflow_hoop and shell is None else None,
        )
        row = SessionRow(
            id=session_id,
            connection=target.name,
            step_key=step.key,
            dag_id=step.dag_id,
            task_id=step.task_id,
            run_id=step.run_id,
            try_number=step.try_number,
            map_index=step.map_index,
            user=step.key,
            status="open",
            script=request.script,
            correlation_id=request.correlation_id,
            metadata=request.metadata,
            start_date=datetime.now(timezone.utc),
        )
        try:
            appended = await self.store.begin_session(row, step, intent)
        except LedgerError as exc:
            raise LedgerError(f"{exc.what}; the statement was not executed", exc.fix) from None
        ctx.touch()
        running = RunningSession(session_id, step, ctx, appended.seq)
        running.masker = masker
        if shell is not None and isinstance(ctx.runner, ShellRunner):
            running.live = ctx.runner.capture(shell)
            if masker is not None:
                running.stream_masker = StreamMasker(masker)
                running.live.add_masker(running.stream_masker)
        running.task = asyncio.create_task(
            self._run(running, request.script, parameters, autocommit, shell, session_settings),
            name=f"session-{session_id}",
        )
        self._running[session_id] = running
        running.task.add_done_callback(lambda _t: self._running.pop(session_id, None))
        return running

    async def wait(self, running: RunningSession, timeout: float) -> Finished | None:
        """The finished exec, or None when it is still running after ``timeout`` (hoop's 202)."""
        assert running.task is not None
        done, _ = await asyncio.wait({running.task}, timeout=timeout)
        return running.task.result() if done else None

    async def kill(self, session_id: uuid.UUID) -> bool:
        """Cancel a queued or running exec of this process; False when it is not running here."""
        running = self._running.get(session_id)
        if running is None:
            return False
        running.killed = True
        if running.started:
            await running.ctx.runner.cancel()
        return True

    def is_running(self, session_id: uuid.UUID) -> bool:
        return session_id in self._running

    def running(self, session_id: uuid.UUID) -> RunningSession | None:
        """The exec if it is queued or running in this process."""
        return self._running.get(session_id)

    async def shutdown(self) -> None:
        """Interrupt what still runs; each records its result before the process exits."""
        runnings = list(self._running.values())
        for running in runnings:
            running.interrupted = True
            if running.started:
                with contextlib.suppress(Exception):
                    await running.ctx.runner.cancel()
        tasks = [r.task for r in runnings if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=_SHUTDOWN_WAIT_SECONDS)

    # -- the background part -----------------------------------------------------------------
    async def _run(
        self,
        running: RunningSession,
        script: str,
        parameters: Any,
        autocommit: bool,
        shell: ShellInvocation | None = None,
        settings: SessionSettings | None = None,
    ) -> Finished:
        ctx = running.ctx
        try:
            async with ctx.lock:
                if running.killed or running.interrupted or ctx.released:
                    outcome = _not_run(running, ctx)
                else:
                    running.started = True
                    if isinstance(ctx.runner, ShellRunner):
                        assert shell is not None and running.live is not None
                        outcome = await ctx.runner.execute(shell, running.live)
                    else:
                        outcome = await ctx.runner.execute(
                            script,
                            parameters,
                            autocommit=autocommit,
                            masker=running.masker,
                            seq=running.intent_seq,
                            settings=settings,
                        )
                    ctx.touch()
        except Exception as exc:  # never lose the result record to an unexpected error
            log.exception("session %s failed unexpectedly", running.session_id)
            if running.live is not None:
                running.live.finish()
            outcome = RunOutcome(
                status="failed",
                exit_code=_NO_EXIT_CODE,
                error=f"gateway error ({type(exc).__name__})",
                duration_ms=0.0,
                output=f"[gateway] internal error ({type(exc).__name__})\n",
            )
        return await self._finish(running, outcome)

    async def _finish(self, running: RunningSession, outcome: RunOutcome) -> Finished:
        if running.live is not None and not running.live.finished:
            running.live.finish()  # never started: readers must not wait for it
        outcome = _masking_failed(running, outcome)
        status, exit_code, output = _final_status(running, outcome)
        shell = outcome if isinstance(outcome, ShellOutcome) else None
        typed = TypedResult(
            columns=outcome.columns,
            rows=[[_cell(v) for v in row] for row in outcome.rows],
            rowcount=outcome.rowcount,
            status_message=outcome.status_message,
            db_user=running.ctx.credential.username if running.ctx.credential else None,
            intent_seq=running.intent_seq,
            shell=shell.run_info() if shell else None,
        )
        output_status = "success" if status == "success" else "failed"
        body = SessionResult(
            session_id=str(running.session_id),
            connection=running.ctx.connection.name,
            status=status,
            exit_code=exit_code,
            rowcount=outcome.rowcount,
            rows_returned=len(outcome.rows),
            status_message=outcome.status_message,
            output_sha256=sha256_hex(output),
            duration_ms=outcome.duration_ms,
            truncated=outcome.truncated,
            error=outcome.error,
            sqlstate=outcome.sqlstate,
            shell=shell.ledger_detail() if shell else None,
            masking=running.masker.record() if running.masker else None,
        )
        typed.masking = body.masking
        end = SessionEnd(
            exit_code=exit_code,
            output_status=output_status,
            output=output,
            truncated=outcome.truncated,
            result=typed.model_dump(mode="json"),
        )
        ledger_error = None
        try:
            appended = await self.store.finish_session(
                running.session_id, end, running.step, running.step.key, body
            )
            typed.result_seq = appended.seq
        except LedgerError as exc:
            log.error("session %s ran but its result was not recorded: %s", running.session_id, exc)
            # The row stays open: once the database is back, this process's recovery sweep
            # closes it with an ``interrupted`` result record, so the intent keeps its pair
            # (marking the row done here would leave the intent unpaired for good).
            ledger_error = str(
                LedgerError(
                    f"session {running.session_id} ran, but its result could not be recorded "
                    f"({exc.what})",
                    exc.fix,
                )
            )
        if outcome.unmasked_rows is not None or outcome.unmasked_output is not None:
            # The policy lets the task have unmasked results (recorded as unmasked_to_task);
            # the session row and the ledger above hold the masked ones.
            rows = outcome.rows if outcome.unmasked_rows is None else outcome.unmasked_rows
            typed = typed.model_copy(update={"rows": [[_cell(v) for v in r] for r in rows]})
            if outcome.unmasked_output is not None and output.startswith(outcome.output):
                output = outcome.unmasked_output + output[len(outcome.output) :]
        response = ExecResponse(
            session_id=str(running.session_id),
            output=output,
            output_status=output_status,
            truncated=outcome.truncated,
            execution_time=int(outcome.duration_ms),
            exit_code=exit_code,
            airflow_hoop=typed,
        )
        return Finished(response=response, ledger_error=ledger_error)


def _masking_failed(running: RunningSession, outcome: RunOutcome) -> RunOutcome:
    """A shell command whose output a strict policy could not mask has failed (withheld)."""
    failure = running.stream_masker.failed if running.stream_masker else None
    if failure is None:
        return outcome
    return outcome.model_copy(
        update={"status": "failed", "exit_code": outcome.exit_code or 1, "error": failure}
    )


def _not_run(running: RunningSession, ctx: StepContext) -> RunOutcome:
    if running.killed:
        why = "killed before it started"
    elif running.interrupted:
        why = "the gateway stopped before it started"
    else:
        why = "the step's credential was released before it started"
    return RunOutcome(
        status="failed",
        exit_code=1,
        error=f"not executed: {why}",
        duration_ms=0.0,
        output=f"[gateway] not executed: {why}\n",
    )


def _final_status(running: RunningSession, outcome: RunOutcome) -> tuple[Any, int, str]:
    """(ledger status, exit code, output): a kill only counts if it stopped the statement."""
    cancelled = isinstance(outcome, ShellOutcome) and outcome.cancelled
    # A SQL statement cancelled because its step ended (task killed, e.g. execution_timeout,
    # while the exec was still in its sync window) is a kill too, as for shell commands.
    cancelled = cancelled or (outcome.sqlstate == _QUERY_CANCELED and running.ctx.released)
    stopped = not running.started or outcome.sqlstate == _QUERY_CANCELED or cancelled
    if running.killed and stopped:
        return "killed", _NO_EXIT_CODE, f"{outcome.output}[gateway] session killed\n"
    if running.interrupted and stopped:
        note = "[gateway] interrupted: the gateway stopped\n"
        return "interrupted", _NO_EXIT_CODE, f"{outcome.output}{note}"
    if cancelled:  # the step ended (or its credential expired) while the command ran
        note = "[gateway] session killed: the step's context was released\n"
        return "killed", _NO_EXIT_CODE, f"{outcome.output}{note}"
    return outcome.status, outcome.exit_code, outcome.output


def _cell(value: Any) -> JsonValue:
    """A result cell for the wire; types the codec does not know travel as their text."""
    try:
        return encode_value(value)  # type: ignore[no-any-return]
    except TypeError:
        return str(value)
