"""Review routes: hoop's (``/api/reviews``, ``/api/sessions/{id}/exec``) and ours.

hoop: ``GET /api/reviews``, ``GET|PUT /api/reviews/{id}`` (review id or session id),
``PUT /api/sessions/{id}/review``, ``POST /api/sessions/{id}/exec``.
Ours: ``POST /api/airflow-hoop/reviews`` (a step asks for an approval) and
``GET /api/airflow-hoop/reviews/{id}/poll`` (the deferred sensor's trigger reads the status
with the review's poll token, so the triggerer needs no Vault login) and
``POST /api/airflow-hoop/reviews/{id}/reminder`` (a sensor that pokes claims its one reminder).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import JSONResponse

from airflow_hoop.errors import PolicyRefusedError
from airflow_hoop.gateway.access.auth import StepPrincipal
from airflow_hoop.gateway.access.policy import check_exec
from airflow_hoop.gateway.approvals.gate import runs_read_only
from airflow_hoop.gateway.approvals.service import (
    POLL_TOKEN_PREFIX,
    ReviewConflict,
    ReviewNotFound,
    same_task_instance,
)
from airflow_hoop.gateway.approvals.store import utc_now
from airflow_hoop.gateway.db.notification_outbox import NotificationOutbox
from airflow_hoop.gateway.routes.deps import Caller, Svc
from airflow_hoop.gateway.targets import target_for
from airflow_hoop.wire.reviews import Review, ReviewCreate, ReviewCreated, ReviewDecisionRequest
from airflow_hoop.wire.sessions import ExecExtension, ExecRequest, ExecResponse
from airflow_hoop.wire.values import decode_parameters

router = APIRouter(prefix="/api")

T = TypeVar("T")

_MAX_LIST = 500
#: Sessions being executed through /exec by this process (hoop answers 409 to a second call).
_executing: set[str] = set()


async def _mapped(call: Awaitable[T]) -> T:
    """Review errors to hoop's status codes (policy and bad-request errors map in app.py)."""
    try:
        return await call
    except ReviewNotFound as exc:
        raise HTTPException(404, detail=str(exc)) from None
    except ReviewConflict as exc:
        raise HTTPException(400, detail=str(exc)) from None


@router.get("/reviews")
async def list_reviews(
    svc: Svc,
    caller: Caller,
    status: Annotated[str | None, Query(description="comma-separated statuses")] = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=_MAX_LIST)] = 100,
) -> list[Review]:
    """Reviews, newest first (hoop lists all; the filters are ours)."""
    statuses = [s.strip().upper() for s in status.split(",") if s.strip()] if status else None
    return await svc.reviews.search(
        caller, status=statuses, dag_id=dag_id, run_id=run_id, task_id=task_id, limit=limit
    )


@router.get("/reviews/{review_id}")
async def get_review(review_id: str, svc: Svc, caller: Caller) -> Review:
    return await _mapped(svc.reviews.get(caller, review_id))


@router.put("/reviews/{review_id}")
async def decide_review(
    review_id: str, body: ReviewDecisionRequest, svc: Svc, caller: Caller
) -> Review:
    """Approve, reject or revoke (hoop's ReviewRequest; our reason and identity extensions)."""
    return await _mapped(svc.reviews.decide(caller, review_id, body))


@router.put("/sessions/{session_id}/review")
async def decide_session_review(
    session_id: str, body: ReviewDecisionRequest, svc: Svc, caller: Caller
) -> Review:
    return await _mapped(svc.reviews.decide(caller, session_id, body))


@router.post("/airflow-hoop/reviews")
async def request_review(body: ReviewCreate, svc: Svc, caller: Caller) -> JSONResponse:
    """A step asks for an approval of a step of its own DAG run (idempotent while open)."""
    if not isinstance(caller, StepPrincipal):
        raise HTTPException(
            403,
            detail=str(
                PolicyRefusedError(
                    "only a step may request a review", "request it from the DAG's sensor"
                )
            ),
        )
    created: ReviewCreated = await _mapped(svc.reviews.request(caller.step, body))
    return JSONResponse(
        created.model_dump(mode="json"), status_code=201 if created.created else 200
    )


@router.get("/airflow-hoop/reviews/{review_id}/poll")
async def poll_review(
    review_id: str, svc: Svc, authorization: Annotated[str | None, Header()] = None
) -> Review:
    """The review's state for the holder of its poll token (``Bearer hrt_...``)."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(POLL_TOKEN_PREFIX):
        raise HTTPException(401, detail="access denied")
    return await _mapped(svc.reviews.poll(review_id, token))


@router.post("/airflow-hoop/reviews/{review_id}/reminder")
async def claim_reminder(
    review_id: str, svc: Svc, authorization: Annotated[str | None, Header()] = None
) -> dict[str, bool]:
    """A waiting task that is not deferred (a sensor in poke or reschedule mode) claims the
    review's one task-side reminder: ``{"claimed": true}`` once per review, across the task's
    processes; false once sent or when the review is no longer pending."""
    review = await poll_review(review_id, svc, authorization)
    if review.status != "PENDING":
        return {"claimed": False}
    outbox = NotificationOutbox(svc.store)
    row = await outbox.add(
        uuid.UUID(review.id), "reminder:task", "review.reminder", utc_now(), state="sent"
    )
    return {"claimed": row is not None}


@router.post("/sessions/{session_id}/exec", response_model=None)
async def exec_reviewed(session_id: str, svc: Svc, caller: Caller) -> Any:
    """hoop's "run an approved session": the step runs the approved command as stored."""
    review = await _mapped(svc.reviews.get(caller, session_id))
    ext = review.airflow_hoop
    assert ext is not None
    if not isinstance(caller, StepPrincipal) or not same_task_instance(caller.step, ext.target):
        raise HTTPException(
            403,
            detail=str(
                PolicyRefusedError(
                    "only the step the review is for may run it",
                    f"run it from task {ext.target.task_id} of run {ext.target.run_id}",
                )
            ),
        )
    if review.status != "APPROVED" or ext.used_count or ext.expired:
        state = "expired" if ext.expired else review.status.lower()
        raise HTTPException(
            403,
            detail=str(
                PolicyRefusedError(
                    f"review {review.id} is {state}, not approved and unused",
                    "have the command approved (GET /api/reviews/{id} says APPROVED) first",
                )
            ),
        )
    target = target_for(svc.settings, ext.connection)
    if target is None or not target.runs_reviewed_sessions:
        raise HTTPException(
            400, detail="[gateway review] /exec runs SQL reviews only. Fix: send the command"
        )
    if review.session in _executing:
        raise HTTPException(409, detail=f"the session {review.session} is already being processed")
    _executing.add(review.session)
    try:
        row = await svc.reviews.rows.get(uuid.UUID(review.id))
        assert row is not None
        step = caller.step
        response: ExecResponse | None = None
        for statement in row.statements:
            request = ExecRequest(
                connection=row.connection,
                script=statement.script,
                metadata={"review_id": review.id},
                # autocommit, as psql runs a script in hoop
                airflow_hoop=ExecExtension(parameters=statement.parameters, autocommit=True),  # type: ignore[arg-type]
            )
            denied = check_exec(step, target.connection, {})
            if denied is not None:
                raise HTTPException(403, detail=denied.message)
            approval = await svc.gate.require_approval(step, target, request, statement.parameters)
            running = await svc.sessions.start(
                step,
                target,
                request,
                decode_parameters(statement.parameters),
                statement.parameters,
                issued_at=caller.issued_at,
                read_only=runs_read_only(target, step.dag_id, approval),
            )
            finished = await svc.sessions.wait(running, svc.settings.sync_timeout_seconds)
            if finished is None:
                body = ExecResponse(
                    session_id=str(running.session_id), output_status="running", exit_code=-2
                )
                return JSONResponse(
                    body.model_dump(mode="json", exclude={"airflow_hoop"}), status_code=202
                )
            if finished.ledger_error:
                raise HTTPException(503, detail=finished.ledger_error)
            response = finished.response
            if response.output_status != "success":
                break
        assert response is not None
        return response.model_dump(mode="json")
    finally:
        _executing.discard(review.session)
