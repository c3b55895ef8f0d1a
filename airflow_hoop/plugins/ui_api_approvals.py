"""JSON for the React plugin bundle's Approvals views and the home-page widget.

Who may decide is said before anyone clicks: without PUT on the DAG's task instances, as the
user who triggered the run (separation of duties), or once the review is no longer pending,
the view shows why instead of buttons. The gateway still enforces every rule when a decision
arrives (its review groups, separation of duties, expiry): these checks only explain.

A decision is sent by this api-server process with the plugin's approver key, naming the
Airflow user; never by a task or the triggerer. Same-origin JSON only (a cross-site form
cannot send ``application/json`` without a CORS preflight, which Airflow does not grant).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import APIRouter, Depends, HTTPException

from airflow_hoop.errors import BadRequestError, HoopError, PolicyRefusedError
from airflow_hoop.plugins import approvals
from airflow_hoop.plugins.audit.pages import client, may_read
from airflow_hoop.plugins.common import map_index_param
from airflow_hoop.wire.audit import MAX_SEARCH_PAGE, AuditQuery
from airflow_hoop.wire.reviews import Review
from airflow_hoop.wire.ui import DecideIn, PendingItem, ReviewView, Summary

router = APIRouter(prefix="/ui/api")

_CAN_READ = Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))
_CAN_DECIDE = Depends(requires_access_dag("PUT", DagAccessEntity.TASK_INSTANCE))


def why_not(user: Any, review: Review) -> str | None:
    """Why this user may not decide the review (None: they may, as far as Airflow knows)."""
    ext = review.airflow_hoop
    if ext is None:
        return "this review was not requested by an Airflow task"
    if review.status != "PENDING":
        return f"already {review.status.lower()}"
    if ext.expired or (ext.expires_at and ext.expires_at <= datetime.now(timezone.utc)):
        return "expired: the task must ask again"
    if not approvals._may_decide(user, ext.target.dag_id):
        return (
            f"you may not decide for DAG {ext.target.dag_id}: deciding needs edit (PUT) "
            "permission on its task instances"
        )
    name = user.get_name()
    if ext.triggered_by and name == ext.triggered_by:
        return "you triggered this run: someone else must approve it (separation of duties)"
    if name == ext.requester:
        return "you requested this review: someone else must approve it"
    return None


def _view(user: Any, review: Review) -> ReviewView:
    reason = why_not(user, review)
    return ReviewView(review=review, can_decide=reason is None, why_not=reason)


def _failed(exc: HoopError) -> HTTPException:
    status = 403 if isinstance(exc, PolicyRefusedError) else 400
    if not isinstance(exc, PolicyRefusedError | BadRequestError):
        status = 502
    return HTTPException(status, {"what": exc.what, "fix": exc.fix})


@router.get("/approvals")
async def pending(user: GetUserDep) -> list[ReviewView]:
    """Every pending review of a DAG the user may read, newest first."""
    try:
        async with approvals._client() as gateway:
            reviews = await gateway.list_reviews(status="PENDING", limit=500)
    except HoopError as exc:
        raise _failed(exc) from None
    return [
        _view(user, r)
        for r in reviews
        if r.airflow_hoop and may_read(user, r.airflow_hoop.target.dag_id)
    ]


@router.get("/approvals/{dag_id}/{run_id}/{task_id}", dependencies=[_CAN_READ])
async def of_task(
    dag_id: str, run_id: str, task_id: str, user: GetUserDep, map_index: str | None = None
) -> list[ReviewView]:
    """The reviews of a task instance: those it asked for and those bound to it."""
    index = map_index_param(map_index)
    try:
        async with approvals._client() as gateway:
            reviews = await gateway.list_reviews(dag_id=dag_id, run_id=run_id, task_id=task_id)
    except HoopError as exc:
        raise _failed(exc) from None
    return [
        _view(user, r)
        for r in reviews
        if r.airflow_hoop
        and (r.airflow_hoop.target.task_id != task_id or r.airflow_hoop.target.map_index == index)
    ]


@router.post("/decide/{dag_id}/{review_id}", dependencies=[_CAN_DECIDE])
async def decide(dag_id: str, review_id: str, body: DecideIn, user: GetUserDep) -> ReviewView:
    """Approve or reject; the gateway records the Airflow user, the channel and the reason."""
    reason = body.reason.strip() or None
    if body.decision == "REJECTED" and not reason:
        raise HTTPException(400, {"what": "a reason is required to reject", "fix": "say why"})
    try:
        async with approvals._client() as gateway:
            review = await gateway.get_review(review_id)
            if review.airflow_hoop is None or review.airflow_hoop.target.dag_id != dag_id:
                # Permission was checked on dag_id: the review must belong to that DAG.
                raise HTTPException(404, {"what": "no such review", "fix": "reload the page"})
            decided = await gateway.decide(
                review.id,
                body.decision,
                user=user.get_name(),
                reason=reason,
                command_sha256=body.command_sha256 or None,
            )
    except HoopError as exc:
        raise _failed(exc) from None
    return _view(user, decided)


@router.get("/summary")
async def summary(user: GetUserDep) -> Summary:
    """The home-page widget's numbers, over the DAGs the user may read."""
    since = datetime.now(timezone.utc) - timedelta(hours=24)
    try:
        async with approvals._client() as gateway:
            waiting = await gateway.list_reviews(status="PENDING", limit=500)
            rejected = await gateway.list_reviews(status="REJECTED", limit=500)
        with client() as audit:
            page = audit.search(AuditQuery(since=since, limit=MAX_SEARCH_PAGE))
    except HoopError as exc:
        raise _failed(exc) from None
    readable = {d for d in {r.dag_id for r in page.rows} if may_read(user, d)}
    rows = [r for r in page.rows if r.dag_id in readable]
    pending_items = [
        PendingItem(
            id=r.id,
            dag_id=r.airflow_hoop.target.dag_id,
            run_id=r.airflow_hoop.target.run_id,
            task_id=r.airflow_hoop.target.task_id,
            map_index=r.airflow_hoop.target.map_index,
            connection=r.airflow_hoop.connection,
            created_at=r.created_at,
            expires_at=r.airflow_hoop.expires_at,
        )
        for r in waiting
        if r.airflow_hoop and may_read(user, r.airflow_hoop.target.dag_id)
    ]
    return Summary(
        pending=pending_items,
        rejected_24h=sum(
            1
            for r in rejected
            if r.airflow_hoop
            and r.created_at >= since
            and may_read(user, r.airflow_hoop.target.dag_id)
        ),
        failed_commands_24h=sum(1 for r in rows if r.status in ("failed", "killed")),
        governed_steps_24h=len(
            {(r.dag_id, r.run_id, r.task_id, r.map_index, r.try_number) for r in rows}
        ),
        commands_24h=len(rows),
        more=page.next_before_seq is not None,
    )
