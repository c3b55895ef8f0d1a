"""One governed command (``POST /api/sessions``): its checks, in order, before anything runs.

1. the body: hoop's ExecRequest as JSON, its text fields UTF-8 without NUL, the script within
   ``max_script_bytes``;
2. the connection exists and takes the script (empty SQL is not a command);
3. the caller is a step: an API key may not run commands (refusal recorded);
4. the typed parameters decode;
5. policy: the DAG may use the connection and the metadata agrees with the token (recorded);
6. the command for its kind of connection (``targets.py``): a shell command's arguments, cwd
   and environment; a cwd outside the connection's roots, or a session setting the connection
   does not allow (or ``search_path`` where an approval rule covers the DAG), is a refusal
   (recorded);
7. approvals, the last check: a command a rule marks runs only with an approved, unexpired,
   unused review bound to this step and command (``approvals/gate.py``, recorded);
8. start: credential, intent record, then the run (``execution/sessions.py``); a command that
   used no approval under a ``required_for: writes`` rule runs as the step's READ user in a
   read-only transaction (``runs_read_only``): the database, not the label, refuses its writes;
9. the sync window: the finished exec, or the running one (hoop's 202).

The first check that fails answers; malformed input leaves the ledger untouched, and every
policy refusal is recorded before its 403. The route only reads the body and writes the answer.
"""

from __future__ import annotations

from typing import NoReturn

from pydantic import ValidationError

from airflow_hoop.errors import BadRequestError, PolicyRefusedError
from airflow_hoop.gateway.access.auth import ApiKeyPrincipal, Principal
from airflow_hoop.gateway.access.policy import (
    Refusal,
    api_key_exec_refusal,
    check_exec,
    record_refusal,
)
from airflow_hoop.gateway.approvals.gate import (
    ApprovalGate,
    runs_read_only,
    unbound_settings_refusal,
)
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.gateway.execution.sessions import Finished, RunningSession, SessionService
from airflow_hoop.gateway.settings import GatewaySettings
from airflow_hoop.gateway.targets import target_for
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.wire.sessions import ExecRequest
from airflow_hoop.wire.values import decode_parameters


class Rejected(Exception):
    """The exec is refused before anything runs: answer ``status`` with hoop's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(status: int, what: str, fix: str) -> Rejected:
    return Rejected(status, str(BadRequestError(what, fix)))


class ExecPipeline:
    """Runs the checks of one exec in order, then starts it and waits for the sync window."""

    def __init__(
        self,
        settings: GatewaySettings,
        store: GatewayStore,
        gate: ApprovalGate,
        sessions: SessionService,
    ) -> None:
        self.settings = settings
        self.store = store
        self.gate = gate
        self.sessions = sessions

    async def run(self, caller: Principal, body: bytes) -> Finished | RunningSession:
        """The finished exec, or the running one when it outlives the sync window.

        Raises Rejected for what the gateway answers itself (400, 403, 413, 422), and the
        typed errors of the later steps (app.py maps them: policy 403, Vault or ledger 503).
        """
        settings = self.settings
        req = _parse_exec(body, settings)
        target = target_for(settings, req.connection)
        if target is None:
            # hoop answers 400 here (not 404): same status, same text.
            raise Rejected(400, f"connection {req.connection[:200]} not found")
        if not target.accepts_empty_script and not req.script.strip():
            raise _bad(422, "script is empty", "send the SQL to run in 'script'")
        if isinstance(caller, ApiKeyPrincipal):
            await self._refuse(
                None, caller.name, req, api_key_exec_refusal(caller.key_name, caller.role)
            )
        wire_parameters = req.airflow_hoop.parameters if req.airflow_hoop else None
        try:
            parameters = decode_parameters(wire_parameters)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise _bad(
                400,
                f"a typed parameter cannot be decoded ({type(exc).__name__})",
                'send parameters encoded with airflow_hoop.wire.values ({"$t": ..., "v": ...})',
            ) from None
        step = caller.step
        denied = check_exec(step, target.connection, req.metadata)
        if denied is not None:
            await self._refuse(step, step.key, req, denied)
        try:
            prepared = target.prepare(req, wire_parameters)
        except PolicyRefusedError as exc:  # a cwd outside the roots, a setting not allowed
            await self._refuse(step, step.key, req, Refusal(reason=exc.what, message=str(exc)))
        unbound = unbound_settings_refusal(target, step.dag_id, req)
        if unbound is not None:
            error = PolicyRefusedError(unbound, "set search_path in the SQL, and have it approved")
            await self._refuse(step, step.key, req, Refusal(reason=unbound, message=str(error)))
        # Approvals, last check before anything runs: a command an approval rule marks runs only
        # with an approved, unexpired, unused review bound to this step and command (recorded).
        # A shell command's approval also binds its client_args, cwd and environment.
        approval = await self.gate.require_approval(step, target, req, prepared.approval_parameters)
        running = await self.sessions.start(
            step,
            target,
            req,
            parameters,
            wire_parameters,
            shell=prepared.shell,
            issued_at=caller.issued_at,
            read_only=runs_read_only(target, step.dag_id, approval),
        )
        window = settings.sync_timeout_seconds
        if req.airflow_hoop and req.airflow_hoop.sync_seconds is not None:
            window = min(window, req.airflow_hoop.sync_seconds)
        finished = await self.sessions.wait(running, window)
        return running if finished is None else finished

    async def _refuse(
        self, step: StepRef | None, actor: str, req: ExecRequest, refusal: Refusal
    ) -> NoReturn:
        await record_refusal(self.store, step, actor, req.connection, refusal.reason, req.script)
        raise Rejected(403, refusal.message)


def _parse_exec(raw: bytes, settings: GatewaySettings) -> ExecRequest:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(
            400,
            f"request body is not valid UTF-8 (byte {exc.start})",
            "send the request as UTF-8 JSON",
        ) from None
    try:
        req = ExecRequest.model_validate_json(text)
    except ValidationError as exc:
        # hoop: 422 for metadata/correlation_id rules, 400 for a body it cannot bind.
        hoop_rules = all(e["loc"][:1] in (("metadata",), ("correlation_id",)) for e in exc.errors())
        raise _bad(
            422 if hoop_rules else 400,
            f"invalid exec request: {_summary(exc)}",
            "send hoop's ExecRequest JSON: connection, script, metadata, ...",
        ) from None
    for field, value in _text_fields(req):
        # Postgres text cannot hold NUL nor lone surrogates: refuse before recording.
        if "\x00" in value:
            raise _bad(400, f"{field} contains a NUL character", f"remove NUL from {field}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad(
                400,
                f"{field} is not valid Unicode (lone surrogate)",
                f"send {field} as valid UTF-8",
            ) from None
    size = len(req.script.encode("utf-8"))
    if size > settings.max_script_bytes:
        raise _bad(
            413,
            f"script is {size} bytes, more than max_script_bytes ({settings.max_script_bytes})",
            "split the script or raise max_script_bytes",
        )
    return req


def _text_fields(req: ExecRequest) -> list[tuple[str, str]]:
    fields = [("connection", req.connection), ("script", req.script)]
    if req.correlation_id is not None:
        fields.append(("correlation_id", req.correlation_id))
    for key, value in req.metadata.items():
        fields += [("metadata key", key), (f"metadata {key[:50]!r}", value)]
    return fields


def _summary(exc: ValidationError) -> str:
    # loc and msg only: pydantic's full text would echo the (possibly huge) input.
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
    )
