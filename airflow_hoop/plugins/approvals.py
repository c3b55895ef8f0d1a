"""Approvals in the Airflow UI: a task-instance tab, a top-level page, approve and reject.

Users are authenticated by Airflow's own security dependencies (``GetUserDep``: 401 without
a valid token or ``_token`` cookie) and authorised per DAG (``requires_access_dag``: reading
needs GET on the DAG's task instances, deciding needs PUT, else 403). The decision goes to
the gateway with the plugin's own approver key, naming the Airflow user; the gateway applies
its own rules (review groups, separation of duties) and records it. Pages are Jinja2
templates with autoescaping: a reason or a SQL text is shown as text, never as HTML.

Configuration of the API server (never of the workers): ``[hoop] gateway_url`` and
``[hoop] approver_api_key`` (``AIRFLOW__HOOP__GATEWAY_URL``, ``AIRFLOW__HOOP__APPROVER_API_KEY``).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlparse

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from airflow_hoop.client.approver import AsyncApproverClient
from airflow_hoop.errors import (
    BadRequestError,
    ConfigError,
    GatewayAuthError,
    HoopError,
    PolicyRefusedError,
)
from airflow_hoop.plugins.agent_pause import answer_agent_pause, is_agent_pause
from airflow_hoop.plugins.common import APPROVALS_PREFIX, map_index_param, templates
from airflow_hoop.plugins.settings import PluginSettings
from airflow_hoop.wire.reviews import MAX_REASON, Review

router = APIRouter(prefix="/approvals")

PREFIX = APPROVALS_PREFIX

_CAN_READ = Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))
_CAN_DECIDE = Depends(requires_access_dag("PUT", DagAccessEntity.TASK_INSTANCE))


def _render(name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    html = templates().get_template(name).render(prefix=PREFIX, **values)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def _client() -> AsyncApproverClient:
    settings = PluginSettings.from_airflow()
    url, key = settings.gateway_with(settings.approver_api_key, views="approvals", role="approver")
    return AsyncApproverClient(url, key, ca_file=settings.ca_file)


def _may_decide(user: Any, dag_id: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager

    return bool(
        get_auth_manager().is_authorized_dag(
            method="PUT",
            access_entity=DagAccessEntity.TASK_INSTANCE,
            details=DagDetails(id=dag_id),
            user=user,
        )
    )


def _error_page(exc: HoopError) -> HTMLResponse:
    status = 502
    if isinstance(exc, PolicyRefusedError):
        status = 403
    elif isinstance(exc, BadRequestError):
        status = 400
    elif isinstance(exc, ConfigError | GatewayAuthError):
        status = 503
    return _render("approvals_error.html", status_code=status, message=str(exc))


@router.get("/", response_class=HTMLResponse)
async def pending_page(user: GetUserDep) -> Response:
    """Every pending review the user may decide, newest first, with links to its DAG run."""
    try:
        async with _client() as gateway:
            reviews = await gateway.list_reviews(status="PENDING", limit=500)
    except HoopError as exc:
        return _error_page(exc)
    mine = [
        r for r in reviews if r.airflow_hoop and _may_decide(user, r.airflow_hoop.target.dag_id)
    ]
    return _render("approvals_list.html", reviews=mine, user=user.get_name(), quote=quote)


@router.get(
    "/ti/{dag_id}/{run_id}/{task_id}", response_class=HTMLResponse, dependencies=[_CAN_READ]
)
async def task_instance_tab(
    dag_id: str, run_id: str, task_id: str, user: GetUserDep, map_index: str | None = None
) -> Response:
    """The reviews of a task instance: those it asked for and those bound to it."""
    index = map_index_param(map_index)
    try:
        async with _client() as gateway:
            reviews = await gateway.list_reviews(dag_id=dag_id, run_id=run_id, task_id=task_id)
    except HoopError as exc:
        return _error_page(exc)
    shown = [
        r
        for r in reviews
        if r.airflow_hoop
        and (r.airflow_hoop.target.task_id != task_id or r.airflow_hoop.target.map_index == index)
    ]
    return _render(
        "approvals_ti.html",
        reviews=shown,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=index,
        can_decide=_may_decide(user, dag_id),
        user=user.get_name(),
        return_to=f"{PREFIX}/ti/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/"
        f"{quote(task_id, safe='')}?map_index={index}",
        quote=quote,
    )


@router.post("/decide/{dag_id}/{review_id}", dependencies=[_CAN_DECIDE])
async def decide(
    request: Request,
    dag_id: str,
    review_id: str,
    user: GetUserDep,
    decision: Annotated[str, Form()],
    command_sha256: Annotated[str, Form()],
    reason: Annotated[str, Form(max_length=MAX_REASON)] = "",
    return_to: Annotated[str, Form()] = "",
    break_glass: Annotated[str, Form()] = "",
) -> Response:
    """Approve or reject (a reason is required to reject); the gateway records who and why."""
    if not _same_origin(request):
        return _render(
            "approvals_error.html", status_code=403, message="cross-site form posts are refused"
        )
    decision = decision.upper()
    reason_text = reason.strip() or None
    if decision not in ("APPROVED", "REJECTED"):
        return _render("approvals_error.html", status_code=400, message="unknown decision")
    if decision == "REJECTED" and not reason_text:
        return _render(
            "approvals_error.html",
            status_code=400,
            message="A reason is required to reject. Go back and say why.",
        )
    try:
        async with _client() as gateway:
            review = await gateway.get_review(review_id)
            if review.airflow_hoop is None or review.airflow_hoop.target.dag_id != dag_id:
                # Permission was checked on dag_id: the review must belong to that DAG.
                return _render("approvals_error.html", status_code=404, message="no such review")
            decided = await gateway.decide(
                review.id,
                decision,
                user=user.get_name(),
                reason=reason_text,
                command_sha256=command_sha256 or None,
                # The gateway decides who may; the UI key needs the break-glass group for it.
                break_glass=decision == "APPROVED" and break_glass == "1",
            )
    except HoopError as exc:
        return _error_page(exc)
    if is_agent_pause(decided):
        # The same decision, to the agent task parked in Airflow's tool approval.
        await run_in_threadpool(answer_agent_pause, decided, user, reason_text)
    target = return_to if return_to.startswith(PREFIX + "/") else _review_page(decided)
    return RedirectResponse(target, status_code=303)


def _review_page(review: Review) -> str:
    ext = review.airflow_hoop
    assert ext is not None
    t = ext.target
    return (
        f"{PREFIX}/ti/{quote(t.dag_id, safe='')}/{quote(t.run_id, safe='')}/"
        f"{quote(t.task_id, safe='')}?map_index={t.map_index}"
    )


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on form posts; one from another site is a forged decision."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return True  # same-origin navigations may omit it; the SameSite cookie still applies
    return urlparse(origin).netloc == request.headers.get("host", "")
