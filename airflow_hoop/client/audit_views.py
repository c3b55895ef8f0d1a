"""The audit-view reads of the gateway (``/api/airflow-hoop/audit/*``): what the Airflow UI
plugin uses, with an auditor key. The models are in ``airflow_hoop.wire.audit``.
"""

from __future__ import annotations

import json

from airflow_hoop.client.audit import AuditClient
from airflow_hoop.wire.audit import AuditQuery, RecentRuns, RunRecords, SearchPage, StoredOutput

AUDIT = "/api/airflow-hoop/audit"


class AuditViewsClient(AuditClient):
    """The auditor's client plus the audit-view reads (what the Airflow UI plugin uses)."""

    def __enter__(self) -> AuditViewsClient:
        return self

    def run_records(self, dag_id: str, run_id: str, task_id: str | None = None) -> RunRecords:
        params = {"dag_id": dag_id, "run_id": run_id}
        if task_id is not None:
            params["task_id"] = task_id
        data = json.loads(self._get(f"{AUDIT}/run", params).content)
        # Not validated record by record: 2,000 records of a 1,000-statement task would cost
        # more than the rest of the tab. The gateway wrote each one from a validated model.
        return RunRecords.model_construct(
            records=data["records"],
            outputs={k: StoredOutput.model_validate(v) for k, v in data["outputs"].items()},
            truncated=bool(data["truncated"]),
        )

    def search(self, query: AuditQuery) -> SearchPage:
        # A read (retried like one), sent as a POST because the DAG list can be long.
        response = self._gateway.send(
            "POST", f"{AUDIT}/search", json=query.model_dump(mode="json"), retry=True
        )
        return SearchPage.model_validate_json(response.content)

    def recent_runs(self, dag_id: str, limit: int = 25) -> RecentRuns:
        params = {"dag_id": dag_id, "limit": limit}
        return RecentRuns.model_validate_json(self._get(f"{AUDIT}/dag", params).content)
