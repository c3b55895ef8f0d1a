"""Session routes: hoop's session API subset, plus the end of a step (``/api/airflow-hoop``).

Every error body is hoop's ``{"message": ...}``. An exec's checks run in ``pipeline.py``;
these routes read the request and write the answer.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

from airflow_hoop.errors import BadRequestError, PolicyRefusedError
from airflow_hoop.gateway.access.auth import ApiKeyPrincipal, StepPrincipal
from airflow_hoop.gateway.db.store import SessionRow
from airflow_hoop.gateway.execution.sessions import RunningSession
from airflow_hoop.gateway.pipeline import Rejected
from airflow_hoop.gateway.routes.deps import Caller, EndingCaller, Svc, owned_session
from airflow_hoop.wire.sessions import (
    CheckpointNote,
    ExecRequest,
    ExecResponse,
    RevokeMode,
    ScriptData,
    SessionInfo,
    SessionList,
    StepEndResponse,
    TypedResult,
)

router = APIRouter(prefix="/api")
log = logging.getLogger(__name__)

_MAX_LIST_LIMIT = 100  # hoop clamps limit to 100
_MAX_LIST_OFFSET = 10_000  # hoop answers 422 beyond this


def _error(status: int, what: str, fix: str) -> HTTPException:
    return HTTPException(status, detail=str(BadRequestError(what, fix)))


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
    raw = await _read_body(request, svc.settings.max_request_bytes)
    try:
        outcome = await svc.pipeline.run(caller, raw)
    except Rejected as exc:
        raise HTTPException(exc.status, detail=exc.message) from None
    if isinstance(outcome, RunningSession):
        body = ExecResponse(
            session_id=str(outcome.session_id),
            output="",
            output_status="running",
            exit_code=-2,
            has_review=False,
            truncated=False,
            execution_time=0,
        )
        return JSONResponse(body.model_dump(mode="json", exclude={"airflow_hoop"}), status_code=202)
    if outcome.ledger_error:
        raise HTTPException(503, detail=outcome.ledger_error)
    # pydantic's own JSON encoder: several times faster than json.dumps on a large output.
    return Response(outcome.response.model_dump_json(), media_type="application/json")


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


# -- sessions --------------------------------------------------------------------------------
@router.get("/sessions/{session_id}")
async def get_session(session_id: str, svc: Svc, caller: Caller) -> SessionInfo:
    row = await owned_session(svc, caller, session_id)
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
    row = await owned_session(svc, caller, session_id)
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
    request: Request,
    svc: Svc,
    caller: EndingCaller,
    revoke: Annotated[RevokeMode, Query()] = "wait",
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
    try:
        # In the table first: from now on every process refuses the step's token and mints
        # nothing for it (access/ended_steps.py), even one that starts later.
        await svc.registry.tenure.mark_ended(caller.step)
    finally:  # released here even if the table could not be written (then: 503)
        revoked = await svc.registry.end_step(caller.step, wait=wait)
    if svc.step_ends is not None:  # what other processes hold for the step goes too
        await svc.step_ends.publish(caller.step)
    return StepEndResponse(
        step=caller.step.key,
        revoked_db_users=revoked,
        revocation="done" if wait or not revoked else "in-progress",
        checkpoint=await _checkpoint_note(request),
    )


async def _checkpoint_note(request: Request) -> CheckpointNote | None:
    """For the step's lineage facet; a step's end never fails for it."""
    signer = getattr(request.app.state, "checkpoints", None)
    if signer is None:
        return None
    try:
        note: CheckpointNote | None = await signer.note()
    except Exception as exc:
        log.warning("checkpoint state not read for a step's end: %s", exc)
        return None
    return note
