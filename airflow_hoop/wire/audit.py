"""The wire models of the gateway's audit-view reads (``/api/airflow-hoop/audit/*``).

Shared by the gateway (which answers them) and the Airflow UI plugin (which reads them with
an auditor key). Read-only: nothing here describes a change to the ledger.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

#: The most rows one search page answers.
MAX_SEARCH_PAGE = 200
#: The most DAG ids a search may be restricted to (the UI sends the user's readable DAGs).
MAX_DAG_IDS = 10_000
#: The most records one run/step read answers; beyond it ``truncated`` says so.
MAX_RUN_RECORDS = 50_000
#: The most characters of one command's stored (masked) output sent to the UI.
MAX_OUTPUT_CHARS = 65_536

Status = Literal["success", "failed", "killed", "interrupted", "open"]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refused here (422) rather than by the database (503).
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


#: A filter value that PostgreSQL can compare with (no NUL).
FilterText = Annotated[str, AfterValidator(_no_nul)]


class AuditQuery(BaseModel):
    """A search of the ledger's commands; every given filter must match.

    ``dag_ids`` restricts the answer to these DAGs (the Airflow UI sends the DAGs its user may
    read; None means no restriction). ``user`` matches the database user or shell runner a
    command ran as, or the Airflow user who triggered its run. Pages go backwards in time:
    ``before_seq`` continues from the previous page's ``next_before_seq``.
    """

    model_config = ConfigDict(extra="forbid")

    since: datetime | None = None
    until: datetime | None = None
    dag_ids: list[FilterText] | None = Field(None, max_length=MAX_DAG_IDS)
    dag_id: FilterText | None = Field(None, max_length=250)
    task_id: FilterText | None = Field(None, max_length=250)
    run_id: FilterText | None = Field(None, max_length=250)
    connection: FilterText | None = Field(None, max_length=250)
    user: FilterText | None = Field(None, max_length=250)
    status: Status | None = None
    before_seq: int | None = Field(None, ge=1)
    limit: int = Field(50, ge=1, le=MAX_SEARCH_PAGE)

    @model_validator(mode="after")
    def _aware_times(self) -> AuditQuery:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} needs a time zone (ISO 8601 with Z or +00:00)")
        return self


class CommandRow(BaseModel):
    """One command of the search answer: its intent record joined with its result."""

    seq: int = Field(description="the intent record's sequence number")
    time: datetime
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int
    connection: str
    session_id: str
    script: str = Field(description="the command's text, cut to 2,000 characters")
    script_cut: bool = False
    db_user: str | None = None
    run_as: str | None = Field(None, description="the shell runner, for shell commands")
    triggered_by: str | None = None
    status: str = "open"
    exit_code: int | None = None
    rows: int | None = None
    duration_ms: float | None = None


class SearchPage(BaseModel):
    """``POST /api/airflow-hoop/audit/search``: newest first."""

    rows: list[CommandRow]
    next_before_seq: int | None = None


class StoredOutput(BaseModel):
    """What the gateway kept of one command's output (masked where a policy applies)."""

    output: str
    cut: bool = Field(False, description="longer than MAX_OUTPUT_CHARS; the rest is not sent")
    truncated: bool = Field(False, description="the gateway itself truncated the output")


class RunRecords(BaseModel):
    """``GET /api/airflow-hoop/audit/run``: a DAG run's records (one task's, when asked, and
    the run's review records), in sequence order, and the stored output of each command.

    Each record is its stored JSON object itself (not a string holding it): the UI parses the
    answer once. For the exact hashed bytes, read ``/api/airflow-hoop/ledger/stream``.
    """

    records: list[dict[str, JsonValue]]
    outputs: dict[str, StoredOutput] = Field(default_factory=dict)
    truncated: bool = Field(False, description="more than MAX_RUN_RECORDS records matched")


class RecentRun(BaseModel):
    """One DAG run seen in the ledger, for the DAG page's tab."""

    run_id: str
    first_time: datetime
    last_time: datetime
    records: int
    commands: int
    failed: int


class RecentRuns(BaseModel):
    """``GET /api/airflow-hoop/audit/dag``: the DAG's most recent runs in the ledger."""

    runs: list[RecentRun]
