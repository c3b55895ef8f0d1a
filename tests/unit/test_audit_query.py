"""The audit search's filters are refused before the database when PostgreSQL could not
compare them (a NUL in any text: 422 from FastAPI's validation, never a 503 from the query)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airflow_hoop.wire.audit import AuditQuery


@pytest.mark.parametrize("field", ["dag_id", "task_id", "run_id", "connection", "user"])
def test_a_nul_in_a_filter_is_refused(field: str) -> None:
    with pytest.raises(ValidationError, match="NUL"):
        AuditQuery.model_validate({field: "etl\x00"})


def test_a_nul_in_the_readable_dags_is_refused() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        AuditQuery(dag_ids=["etl", "x\x00"])


def test_ordinary_filters_pass() -> None:
    query = AuditQuery(dag_id="etl ✓", dag_ids=["etl ✓"], user="alice")
    assert (query.dag_id, query.dag_ids, query.user) == ("etl ✓", ["etl ✓"], "alice")
