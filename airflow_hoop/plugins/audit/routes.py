"""The Audit tab (task instance, DAG run, DAG) and the top-level Audit page of the Airflow UI.

Users are authenticated by Airflow's own security dependency (``GetUserDep``: 401 without a
valid token or ``_token`` cookie); each page checks that the user may read the DAG's task
instances (else a 403 page that says which permission is missing); the search shows only
the DAGs the user may read. The ledger is read from the gateway with an auditor key, which
can read but neither run, approve nor change anything. Templates autoescape: SQL, output,
reasons and ids are data, never HTML; the pages' Content-Security-Policy allows no inline
script.

Configuration of the API server (never of the workers): ``[hoop] gateway_url`` and
``[hoop] auditor_api_key`` (``AIRFLOW__HOOP__GATEWAY_URL``, ``AIRFLOW__HOOP__AUDITOR_API_KEY``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from airflow_hoop.errors import (
    GatewayAuthError,
    GatewayUnavailableError,
    HoopError,
    PolicyRefusedError,
)
from airflow_hoop.plugins.audit.form import SearchFormDep
from airflow_hoop.plugins.audit.model import build_steps, select_try
from airflow_hoop.plugins.audit.pages import PREFIX, client, gateway_error, may_read, render
from airflow_hoop.plugins.audit.verify import Badge, verify_span
from airflow_hoop.plugins.common import map_index_param

router = APIRouter(prefix="/audit")

#: Commands per page of a task instance's tab; steps per page and commands per step of a run.
COMMANDS_PER_PAGE = 200
STEPS_PER_PAGE = 20
COMMANDS_PER_STEP = 50
_JS = Path(__file__).parent.parent / "templates" / "audit.js"


def _readable_dags(user: Any) -> set[str]:
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


def _forbidden(dag_id: str, started: float) -> HTMLResponse:
    return render(
        "audit_error.html",
        started,
        status_code=403,
        message=f"Permission missing: you may not read the task instances of DAG {dag_id}.",
        fix="Ask an Airflow admin for read access to this DAG (GET on its task instances).",
    )


@router.get("/static/audit.js", include_in_schema=False)
def script() -> Response:
    """The pages' one script (local times, colour mode, badges)."""
    return Response(
        _JS.read_text(),
        media_type="text/javascript",
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/ti/{dag_id}/{run_id}/{task_id}", response_class=HTMLResponse)
def task_instance_tab(
    dag_id: str,
    run_id: str,
    task_id: str,
    user: GetUserDep,
    map_index: str | None = None,
    try_number: int | None = Query(None, ge=1),
    page: int = Query(1, ge=1),
    page_size: int = Query(COMMANDS_PER_PAGE, ge=1, le=5000),
) -> Response:
    """One try (the latest unless asked) of a task instance: who, as what, each command."""
    started = time.perf_counter()
    if not may_read(user, dag_id):
        return _forbidden(dag_id, started)
    index = map_index_param(map_index)
    try:
        with client() as gateway:
            data = gateway.run_records(dag_id, run_id, task_id)
    except HoopError as exc:
        return gateway_error(exc, started)
    step, tries = select_try(build_steps(data), task_id, index, try_number)
    commands = step.commands if step else []
    pages = max(1, math.ceil(len(commands) / page_size))
    page = min(page, pages)
    shown = commands[(page - 1) * page_size : page * page_size]
    return render(
        "audit_ti.html",
        started,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=index,
        step=step,
        tries=tries,
        try_number=try_number,
        commands=shown,
        page=page,
        pages=pages,
        first_index=shown[0].index if shown else 0,
        last_index=shown[-1].index if shown else 0,
        truncated=data.truncated,
        self_url=f"{PREFIX}/ti/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/"
        f"{quote(task_id, safe='')}?map_index={index}&page_size={page_size}",
    )


@router.get("/run/{dag_id}/{run_id}", response_class=HTMLResponse)
def dag_run_tab(dag_id: str, run_id: str, user: GetUserDep, page: int = Query(1, ge=1)) -> Response:
    """Every governed task of a DAG run, in the order they first wrote to the ledger."""
    started = time.perf_counter()
    if not may_read(user, dag_id):
        return _forbidden(dag_id, started)
    try:
        with client() as gateway:
            data = gateway.run_records(dag_id, run_id)
    except HoopError as exc:
        return gateway_error(exc, started)
    steps = build_steps(data)
    pages = max(1, math.ceil(len(steps) / STEPS_PER_PAGE))
    page = min(page, pages)
    return render(
        "audit_run.html",
        started,
        dag_id=dag_id,
        run_id=run_id,
        all_steps=steps,
        steps=steps[(page - 1) * STEPS_PER_PAGE : page * STEPS_PER_PAGE],
        per_step=COMMANDS_PER_STEP,
        page=page,
        pages=pages,
        truncated=data.truncated,
    )


@router.get("/dag/{dag_id}", response_class=HTMLResponse)
def dag_tab(dag_id: str, user: GetUserDep) -> Response:
    """The DAG's most recent runs in the ledger, with links to each run's audit."""
    started = time.perf_counter()
    if not may_read(user, dag_id):
        return _forbidden(dag_id, started)
    try:
        with client() as gateway:
            runs = gateway.recent_runs(dag_id).runs
    except HoopError as exc:
        return gateway_error(exc, started)
    return render("audit_dag.html", started, dag_id=dag_id, runs=runs)


@router.get("/badge/{dag_id}")
def badge(
    dag_id: str,
    user: GetUserDep,
    first_seq: int = Query(ge=1),
    last_seq: int = Query(ge=1),
) -> JSONResponse:
    """The verification badge of records ``first_seq..last_seq`` of a DAG the user may read."""
    if not may_read(user, dag_id):
        return JSONResponse(
            Badge(state="skipped", text="permission missing").model_dump(), status_code=403
        )
    if last_seq < first_seq:
        return JSONResponse(
            Badge(state="skipped", text="last_seq is before first_seq").model_dump(),
            status_code=400,
        )
    try:
        with client() as gateway:
            result = verify_span(gateway, first_seq, last_seq)
    except HoopError as exc:
        result = Badge(state="skipped", text=f"not verified: {exc.what}")
    return JSONResponse(result.model_dump(), headers={"Cache-Control": "no-store"})


@router.get("/", response_class=HTMLResponse)
def audit_page(user: GetUserDep, form: SearchFormDep) -> Response:
    """Search the ledger's commands (newest first) among the DAGs the user may read."""
    started = time.perf_counter()
    values: dict[str, Any] = {"form": form, "base": "", "rows": [], "error": None}
    values["export_url"] = f"{PREFIX}/export?{urlencode(form.query_params(paging=False))}"
    restricted = not may_read(user, None)
    readable = _readable_dags(user) if restricted else None
    values.update(restricted=restricted, readable=readable, filtered=form.filtered)
    try:
        query = form.to_query(readable)
    except ValueError as exc:
        values["error"] = str(exc)
        return render("audit_search.html", started, status_code=400, **values)
    if readable is not None and not readable:
        return render("audit_search.html", started, **values)
    try:
        with client() as gateway:
            found = gateway.search(query)
    except HoopError as exc:
        values["error"] = _error_text(exc)
        return render("audit_search.html", started, status_code=502, **values)
    values["rows"] = found.rows
    if found.next_before_seq is not None:
        values["next_url"] = f"{PREFIX}/?{urlencode(form.query_params(found.next_before_seq))}"
    if form.before_seq is not None:
        values["first_page_url"] = f"{PREFIX}/?{urlencode(form.query_params(paging=False))}"
    return render("audit_search.html", started, **values)


def _error_text(exc: HoopError) -> str:
    if isinstance(exc, GatewayUnavailableError):
        return f"The gateway is unreachable: {exc.what}. Fix: {exc.fix}"
    if isinstance(exc, GatewayAuthError | PolicyRefusedError):
        return f"The gateway refused the plugin's auditor key: {exc.what}"
    return str(exc)
