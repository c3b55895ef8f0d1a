"""HTTP routes: hoop's session API subset, plus our extensions under ``/api/airflow-hoop``.

Every error body is hoop's ``{"message": ...}``. Input is checked before anything is
recorded or run, so malformed requests leave the ledger untouched; every policy refusal is
recorded before the 403.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from airflow_hoop.errors import BadRequestError, LedgerError, PolicyRefusedError
from airflow_hoop.gateway.access.auth import (
    ApiKeyPrincipal,
    Authenticator,
    Principal,
    StepPrincipal,
)
from airflow_hoop.gateway.access.policy import Refusal, api_key_exec_refusal, check_exec
from airflow_hoop.gateway.approvals.service import ReviewService
from airflow_hoop.gateway.db.ledger_reads import LedgerFilter, ledger_page
from airflow_hoop.gateway.db.store import GatewayStore, SessionRow
from airflow_hoop.gateway.execution.sessions import SessionService
from airflow_hoop.gateway.execution.shell_exec import approval_parameters, shell_invocation
from airflow_hoop.gateway.execution.step_end_bus import StepEndBus
from airflow_hoop.gateway.execution.steps import StepRegistry
from airflow_hoop.gateway.settings import GatewaySettings, ShellConnection
from airflow_hoop.ledger.canonical import sha256_hex
from airflow_hoop.ledger.records import PolicyRefused, StepRef
from airflow_hoop.wire.ledger import LedgerPage
from airflow_hoop.wire.sessions import (
    ExecRequest,
    ExecResponse,
    RevokeMode,
    ScriptData,
    SessionInfo,
    SessionList,
    StepEndResponse,
    TypedResult,
)
from airflow_hoop.wire.values import decode_parameters

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api")

_MAX_LIST_LIMIT = 100  # hoop clamps limit to 100
_MAX_LIST_OFFSET = 10_000  # hoop answers 422 beyond this
_MAX_LEDGER_PAGE = 1000


class Services:
    """What the routes need; built by the app's lifespan."""

    def __init__(
        self,
        settings: GatewaySettings,
        store: GatewayStore,
        auth: Authenticator,
        registry: StepRegistry,
        sessions: SessionService,
        http: httpx.AsyncClient,
        reviews: ReviewService | None = None,
        step_ends: StepEndBus | None = None,
    ) -> None:
        #: Tells the other gateway processes when a step ends (see step_end_bus.py).
        self.step_ends = step_ends
        self.settings = settings
        self.store = store
        self.auth = auth
        self.registry = registry
        self.sessions = sessions
        self.http = http
        self.reviews = reviews or ReviewService(settings, store)


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop on
    # every request (measured ~0.3 ms, more on a busy machine) for a dictionary lookup.
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]


async def principal(svc: Svc, authorization: Annotated[str | None, Header()] = None) -> Principal:
    return await svc.auth.authenticate(authorization)


Caller = Annotated[Principal, Depends(principal)]


def _error(status: int, what: str, fix: str) -> HTTPException:
    return HTTPException(status, detail=str(BadRequestError(what, fix)))


# -- health ----------------------------------------------------------------------------------
@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"liveness": "OK"}


# -- exec ------------------------------------------------------------------------------------
def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` inlined: refs to ``#/$defs`` would point at
    the OpenAPI document's root, where they do not exist."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


# The body is read raw (size cap, UTF-8 and NUL checks before parsing), so FastAPI cannot see
# it: describe it in the OpenAPI document for clients and for the API fuzz test.
_EXEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inline_defs(ExecRequest.model_json_schema())}},
    }
}


@router.post("/sessions", response_model=None, openapi_extra=_EXEC_BODY)
async def create_session(request: Request, svc: Svc, caller: Caller) -> Any:
    """hoop's ad-hoc exec: 200 finished, 202 still running after the sync window."""
    settings = svc.settings
    raw = await _read_body(request, settings.max_request_bytes)
    req = _parse_exec(raw, settings)
    target = settings.connection(req.connection)
    if target is None:
        # hoop answers 400 here (not 404): same status, same text.
        raise HTTPException(400, detail=f"connection {req.connection[:200]} not found")
    if not isinstance(target, ShellConnection) and not req.script.strip():
        # An empty shell script is a valid command (it does nothing); empty SQL is not.
        raise _error(422, "script is empty", "send the SQL to run in 'script'")
    if isinstance(caller, ApiKeyPrincipal):
        refusal = api_key_exec_refusal(caller.key_name, caller.role)
        await _record_refusal(svc, None, caller.name, req, refusal)
        raise HTTPException(403, detail=refusal.message)
    wire_parameters = req.airflow_hoop.parameters if req.airflow_hoop else None
    try:
        parameters = decode_parameters(wire_parameters)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise _error(
            400,
            f"a typed parameter cannot be decoded ({type(exc).__name__})",
            'send parameters encoded with airflow_hoop.wire.values ({"$t": ..., "v": ...})',
        ) from None
    denied = check_exec(caller.step, target, req.metadata)
    if denied is not None:
        await _record_refusal(svc, caller.step, caller.step.key, req, denied)
        raise HTTPException(403, detail=denied.message)
    shell = None
    if isinstance(target, ShellConnection):
        try:
            shell = shell_invocation(req, target)
        except PolicyRefusedError as exc:  # a cwd outside the connection's roots
            refusal = Refusal(reason=exc.what, message=str(exc))
            await _record_refusal(svc, caller.step, caller.step.key, req, refusal)
            raise HTTPException(403, detail=refusal.message) from None
    # Approvals, last check before anything runs: a command an approval rule marks runs only
    # with an approved, unexpired, unused review bound to this step and command (recorded).
    # A shell command's approval also binds its client_args, cwd and environment.
    approval_params = wire_parameters if shell is None else approval_parameters(req, shell)
    await svc.reviews.require_approval(caller.step, target, req, approval_params)
    running = await svc.sessions.start(
        caller.step, target, req, parameters, wire_parameters, shell=shell
    )
    window = settings.sync_timeout_seconds
    if req.airflow_hoop and req.airflow_hoop.sync_seconds is not None:
        window = min(window, req.airflow_hoop.sync_seconds)
    finished = await svc.sessions.wait(running, window)
    if finished is None:
        body = ExecResponse(
            session_id=str(running.session_id),
            output="",
            output_status="running",
            exit_code=-2,
            has_review=False,
            truncated=False,
            execution_time=0,
        )
        return JSONResponse(body.model_dump(mode="json", exclude={"airflow_hoop"}), status_code=202)
    if finished.ledger_error:
        raise HTTPException(503, detail=finished.ledger_error)
    # pydantic's own JSON encoder: several times faster than json.dumps on a large output.
    return Response(finished.response.model_dump_json(), media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    too_big = _error(
        413,
        f"request body exceeds {limit} bytes",
        "send a smaller script or raise max_request_bytes",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_exec(raw: bytes, settings: GatewaySettings) -> ExecRequest:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(
            400,
            f"request body is not valid UTF-8 (byte {exc.start})",
            "send the request as UTF-8 JSON",
        ) from None
    try:
        req = ExecRequest.model_validate_json(text)
    except ValidationError as exc:
        # hoop: 422 for metadata/correlation_id rules, 400 for a body it cannot bind.
        hoop_rules = all(e["loc"][:1] in (("metadata",), ("correlation_id",)) for e in exc.errors())
        raise _error(
            422 if hoop_rules else 400,
            f"invalid exec request: {_summary(exc)}",
            "send hoop's ExecRequest JSON: connection, script, metadata, ...",
        ) from None
    for field, value in _text_fields(req):
        # Postgres text cannot hold NUL nor lone surrogates: refuse before recording.
        if "\x00" in value:
            raise _error(400, f"{field} contains a NUL character", f"remove NUL from {field}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _error(
                400,
                f"{field} is not valid Unicode (lone surrogate)",
                f"send {field} as valid UTF-8",
            ) from None
    size = len(req.script.encode("utf-8"))
    if size > settings.max_script_bytes:
        raise _error(
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


async def _record_refusal(
    svc: Services, step: StepRef | None, actor: str, req: ExecRequest, refusal: Refusal
) -> None:
    body = PolicyRefused(
        connection=req.connection, reason=refusal.reason, script_sha256=sha256_hex(req.script)
    )
    try:
        await svc.store.append(step, actor, body)
    except LedgerError as exc:
        # The refusal stands (fail closed); only its record is missing.
        log.error("policy refusal not recorded: %s", exc)


# -- sessions --------------------------------------------------------------------------------
@router.get("/sessions/{session_id}")
async def get_session(session_id: str, svc: Svc, caller: Caller) -> SessionInfo:
    row = await _owned_session(svc, caller, session_id)
    info = _session_info(row)
    running = svc.sessions.running(row.id)
    if row.status == "open" and running is not None and running.live is not None:
        info.output = running.live.text()  # a shell command's output so far
    return info


@router.get("/sessions")
async def list_sessions(
    svc: Svc,
    caller: Caller,
    correlation_id: str | None = None,
    limit: Annotated[int, Query()] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> SessionList:
    if offset > _MAX_LIST_OFFSET:
        raise _error(422, f"offset {offset} exceeds {_MAX_LIST_OFFSET}", "narrow the query")
    limit = min(max(limit, 1), _MAX_LIST_LIMIT)
    step_key = caller.step.key if isinstance(caller, StepPrincipal) else None
    rows, total = await svc.store.list_sessions(
        correlation_id=correlation_id, step_key=step_key, limit=limit, offset=offset
    )
    return SessionList(
        data=[_session_info(r) for r in rows],
        total=total,
        has_next_page=offset + len(rows) < total,
    )


@router.post("/sessions/{session_id}/kill", status_code=204)
async def kill_session(session_id: str, svc: Svc, caller: Caller) -> Response:
    if isinstance(caller, ApiKeyPrincipal) and caller.role != "admin":
        raise HTTPException(
            403,
            detail=str(
                PolicyRefusedError(
                    f"API key {caller.key_name} ({caller.role}) may not kill sessions",
                    "use an admin key or kill from the step",
                )
            ),
        )
    row = await _owned_session(svc, caller, session_id)
    if row.status == "open" and not await svc.sessions.kill(row.id):
        latest = await svc.store.get_session(row.id)
        if latest is not None and latest.status == "done":  # finished meanwhile
            return Response(status_code=204)
        raise HTTPException(
            409,
            detail=str(
                BadRequestError(
                    f"session {row.id} runs on another gateway process",
                    "send the kill to the gateway process that accepted the session",
                )
            ),
        )
    return Response(status_code=204)


async def _owned_session(svc: Services, caller: Principal, session_id: str) -> SessionRow:
    try:
        sid = uuid.UUID(session_id)
    except ValueError:
        raise HTTPException(404, detail="not found") from None
    row = await svc.store.get_session(sid)
    if row is None:
        raise HTTPException(404, detail="not found")
    if isinstance(caller, StepPrincipal) and row.step_key != caller.step.key:
        raise HTTPException(403, detail="user is not allowed to access this session")
    return row


def _session_info(row: SessionRow) -> SessionInfo:
    return SessionInfo(
        id=str(row.id),
        connection=row.connection,
        status=row.status,
        exit_code=row.exit_code,
        user=row.user,
        user_id=row.step_key,
        user_name=row.user,
        start_date=row.start_date,
        end_date=row.end_date,
        metadata=row.metadata,
        correlation_id=row.correlation_id,
        script=ScriptData(data=row.script),
        output=row.output,
        output_status=row.output_status if row.status == "done" else "running",  # type: ignore[arg-type]
        truncated=row.truncated,
        airflow_hoop=TypedResult.model_validate(row.result) if row.result else None,
    )


# -- airflow-hoop extensions -----------------------------------------------------------------
@router.post("/airflow-hoop/steps/end")
async def end_step(
    svc: Svc, caller: Caller, revoke: Annotated[RevokeMode, Query()] = "wait"
) -> StepEndResponse:
    """The step is over: close its connections, revoke its database users, record it.

    ``revoke=wait`` (default) answers once the users are revoked in Vault and recorded;
    ``revoke=background`` answers once the connections are closed and the revocations have
    started (``revocation: in-progress``): they finish and are recorded right after.
    """
    if not isinstance(caller, StepPrincipal):
        raise HTTPException(
            403,
            detail=str(
                PolicyRefusedError(
                    "only a step's identity token can end that step",
                    "call this from the step itself",
                )
            ),
        )
    wait = revoke == "wait"
    revoked = await svc.registry.end_step(caller.step, wait=wait)
    if svc.step_ends is not None:  # what other processes hold for the step goes too
        await svc.step_ends.publish(caller.step)
    return StepEndResponse(
        step=caller.step.key,
        revoked_db_users=revoked,
        revocation="done" if wait or not revoked else "in-progress",
    )


def require_ledger_reader(caller: Principal) -> None:
    """The ledger is read with API keys (auditor, admin), never by steps: 403 otherwise."""
    if not isinstance(caller, ApiKeyPrincipal):
        raise HTTPException(
            403,
            detail=str(
                PolicyRefusedError(
                    "steps may not read the ledger", "read it with an auditor or admin API key"
                )
            ),
        )


@router.get("/airflow-hoop/ledger")
async def ledger(
    svc: Svc,
    caller: Caller,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=_MAX_LEDGER_PAGE)] = _MAX_LEDGER_PAGE,
    since: datetime | None = None,
    until: datetime | None = None,
    dag_id: str | None = None,
    task_id: str | None = None,
    run_id: str | None = None,
    connection: str | None = None,
) -> LedgerPage:
    """Read-only page of records in sequence order (API keys only).

    Filters (all optional, combined): ``since <= time < until``, dag, task, run, connection.
    ``next_after_seq`` continues the same filtered read.
    """
    require_ledger_reader(caller)
    where = LedgerFilter(
        since=since,
        until=until,
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        connection=connection,
    )
    records = await ledger_page(svc.store, after_seq, limit, where)
    full = len(records) == limit
    return LedgerPage(records=records, next_after_seq=records[-1].seq if full else None)
