"""Read-only routes for the Airflow UI's audit views, under ``/api/airflow-hoop/audit/``.

The UI plugin calls them with an auditor API key: a run's records with the stored (masked)
output of its commands, a search of commands, a DAG's recent runs. Like the other ledger
reads they need an API key; a step's identity token gets 403. There is no route that writes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from airflow_hoop.gateway.db.audit_reads import recent_runs, run_records, search_commands
from airflow_hoop.gateway.routes.deps import Svc
from airflow_hoop.gateway.routes.ledger import Auditor
from airflow_hoop.wire.audit import AuditQuery, RecentRuns, RunRecords, SearchPage

router = APIRouter(prefix="/api/airflow-hoop/audit")

_Name = Annotated[str, Query(min_length=1, max_length=250)]


@router.get("/run", response_model=RunRecords)
async def run(
    svc: Svc, _: Auditor, dag_id: _Name, run_id: _Name, task_id: _Name | None = None
) -> Response:
    """The run's records in sequence order (one task's and the run's review records when
    ``task_id`` is given), and each command's stored output (masked where a policy applies)."""
    rest, records = await run_records(svc.store, dag_id, run_id, task_id)
    # The stored records are canonical JSON objects already: spliced in, not re-encoded.
    head = rest.model_dump_json(exclude={"records"})
    body = '{"records":[' + ",".join(records) + "]," + head[1:]
    return Response(body.encode("utf-8"), media_type="application/json")


@router.post("/search")
async def search(svc: Svc, _: Auditor, query: AuditQuery) -> SearchPage:
    """Commands matching every filter, newest first; ``next_before_seq`` pages on."""
    return await search_commands(svc.store, query)


@router.get("/dag")
async def dag(
    svc: Svc, _: Auditor, dag_id: _Name, limit: Annotated[int, Query(ge=1, le=100)] = 25
) -> RecentRuns:
    """The DAG's runs with the newest records."""
    return await recent_runs(svc.store, dag_id, limit)
