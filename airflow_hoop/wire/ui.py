"""What the React plugin bundle reads from the plugin's JSON endpoints (``plugins/ui_api*.py``).

The bundle renders these in Airflow's own page; every value is shown as text (React escapes).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from airflow_hoop.wire.audit import CommandRow, RecentRun
from airflow_hoop.wire.reviews import MAX_REASON, Review


class TaskAuditView(BaseModel):
    """One try of a task instance: its step (None when it never reached the gateway)."""

    step: dict[str, object] | None = Field(None, description="a StepAudit, as JSON")
    tries: list[int] = Field(default_factory=list)
    truncated: bool = False


class RunAuditView(BaseModel):
    """Every governed step of a DAG run (StepAudit as JSON)."""

    steps: list[dict[str, object]]
    truncated: bool = False


class DagAuditView(BaseModel):
    """A DAG's recent runs in the ledger."""

    runs: list[RecentRun]


class SearchView(BaseModel):
    """One page of the Audit search, with what the DAG pattern matched."""

    rows: list[CommandRow]
    next_before_seq: int | None = None
    matched_dags: list[str] | None = Field(
        None, description="the DAGs a partial or wildcard DAG filter matched (None: no pattern)"
    )
    dags: list[str] = Field(default_factory=list, description="DAGs the user may read")


class ReviewView(BaseModel):
    """A review and whether this user may decide it; ``why_not`` says why not."""

    review: Review
    can_decide: bool
    why_not: str | None = None


class DecideIn(BaseModel):
    """A decision from the bundle; a rejection needs a reason (checked here and in the form)."""

    decision: str = Field(pattern="^(APPROVED|REJECTED)$")
    command_sha256: str = Field("", max_length=64)
    reason: str = Field("", max_length=MAX_REASON)


class PendingItem(BaseModel):
    """A pending review on the home-page widget."""

    id: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    connection: str
    created_at: datetime
    expires_at: datetime | None = None


class Summary(BaseModel):
    """The home-page widget: pending approvals, refusals and governed steps in the last 24 h."""

    pending: list[PendingItem]
    rejected_24h: int
    failed_commands_24h: int
    governed_steps_24h: int
    commands_24h: int
    more: bool = Field(False, description="the 24 h counts stopped at one search page")
