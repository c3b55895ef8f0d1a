"""JSON for the React plugin bundle's Access audit views (task instance, run, DAG, search),
and the bundle itself with its icons.

The same data and the same checks as the server-rendered pages (``audit/routes.py``): Airflow's
``GetUserDep`` authenticates, ``may_read`` authorises per DAG, the gateway is read with the
auditor key. Search adds what the gateway's exact filters lack: a partial or wildcard DAG
filter is matched here against the DAGs the user may read and sent as a list of DAG ids.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from airflow_hoop.errors import HoopError
from airflow_hoop.plugins.audit.form import SearchFormDep
from airflow_hoop.plugins.audit.model import build_steps, select_try
from airflow_hoop.plugins.audit.pages import client, may_read
from airflow_hoop.plugins.common import map_index_param
from airflow_hoop.wire.audit import MAX_DAG_IDS, MAX_SEARCH_PAGE
from airflow_hoop.wire.ui import DagAuditView, RunAuditView, SearchView, TaskAuditView

router = APIRouter(prefix="/ui")

STATIC = Path(__file__).parent / "static"
#: Files the bundle route serves (a fixed set: no path from the URL reaches the filesystem).
_FILES = {
    "hoop-ui.js": "text/javascript",
    "audit.svg": "image/svg+xml",
    "audit-dark.svg": "image/svg+xml",
    "approvals.svg": "image/svg+xml",
    "approvals-dark.svg": "image/svg+xml",
}


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    """The bundle and its icons (public: Airflow imports the bundle before any API call)."""
    if name not in _FILES:
        raise HTTPException(404, "no such file")
    return Response(
        (STATIC / name).read_bytes(),
        media_type=_FILES[name],
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )


def _gateway_failed(exc: HoopError) -> HTTPException:
    return HTTPException(502, {"what": exc.what, "fix": exc.fix})


def _check(user: Any, dag_id: str) -> None:
    if not may_read(user, dag_id):
        raise HTTPException(
            403,
            {
                "what": f"you may not read the task instances of DAG {dag_id}",
                "fix": "ask an Airflow admin for read access to this DAG",
            },
        )


@router.get("/api/ti/{dag_id}/{run_id}/{task_id}")
def task_audit(
    dag_id: str,
    run_id: str,
    task_id: str,
    user: GetUserDep,
    map_index: str | None = None,
    try_number: int | None = Query(None, ge=1),
) -> TaskAuditView:
    """One try (the latest unless asked) of a task instance, every command of it."""
    _check(user, dag_id)
    try:
        with client() as gateway:
            data = gateway.run_records(dag_id, run_id, task_id)
    except HoopError as exc:
        raise _gateway_failed(exc) from None
    step, tries = select_try(build_steps(data), task_id, map_index_param(map_index), try_number)
    return TaskAuditView(
        step=step.model_dump(mode="json") if step else None, tries=tries, truncated=data.truncated
    )


@router.get("/api/run/{dag_id}/{run_id}")
def run_audit(dag_id: str, run_id: str, user: GetUserDep) -> RunAuditView:
    """Every governed step of a DAG run, in the order they first wrote to the ledger."""
    _check(user, dag_id)
    try:
        with client() as gateway:
            data = gateway.run_records(dag_id, run_id)
    except HoopError as exc:
        raise _gateway_failed(exc) from None
    steps = [s.model_dump(mode="json") for s in build_steps(data)]
    return RunAuditView(steps=steps, truncated=data.truncated)


@router.get("/api/dag/{dag_id}")
def dag_audit(dag_id: str, user: GetUserDep) -> DagAuditView:
    """The DAG's most recent runs in the ledger."""
    _check(user, dag_id)
    try:
        with client() as gateway:
            return DagAuditView(runs=gateway.recent_runs(dag_id).runs)
    except HoopError as exc:
        raise _gateway_failed(exc) from None


def readable_dags(user: Any) -> list[str]:
    """Every DAG id the user may read (for the DAG dropdown and pattern matching)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        known = set(session.scalars(select(DagModel.dag_id)))
    if not may_read(user, None):
        known &= set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))
    return sorted(known)


def match_dags(pattern: str, dags: list[str]) -> list[str]:
    """``etl`` matches every DAG containing it; ``*`` and ``?`` are wildcards (case-insensitive)."""
    text = pattern.strip().lower()
    if not any(c in text for c in "*?["):
        text = f"*{text}*"
    return [d for d in dags if fnmatch.fnmatchcase(d.lower(), text)]


@router.get("/api/search")
def search(
    user: GetUserDep,
    form: SearchFormDep,
    limit: int = Query(50, ge=1, le=MAX_SEARCH_PAGE),
) -> SearchView:
    """The Audit search among the DAGs the user may read, newest first, a page at a time."""
    dags = readable_dags(user)
    pattern = form.dag_id
    matched: list[str] | None = None
    if pattern and pattern not in dags:
        matched = match_dags(pattern, dags)[:MAX_DAG_IDS]
        form = form.model_copy(update={"dag_id": None})
    bound = set(matched) if matched is not None else None
    if bound is None and not may_read(user, None):
        bound = set(dags)
    try:
        query = form.to_query(bound, limit=limit)
    except ValueError as exc:
        raise HTTPException(400, {"what": str(exc), "fix": "change the filters"}) from None
    if not query.dag_ids and query.dag_ids is not None:
        return SearchView(rows=[], matched_dags=matched, dags=dags)
    try:
        with client() as gateway:
            found = gateway.search(query)
    except HoopError as exc:
        raise _gateway_failed(exc) from None
    return SearchView(
        rows=found.rows, next_before_seq=found.next_before_seq, matched_dags=matched, dags=dags
    )
