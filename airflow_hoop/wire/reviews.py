"""Pydantic models of hoop's review JSON, plus our extensions under ``airflow_hoop``.

hoop's ``Review`` (``GET|PUT /api/reviews/{id}``) carries status, groups and min_approvals;
what hoop keeps elsewhere or lacks (the command and its digest, the step it is bound to, the
requester, who decided through which channel and why, expiry and use) travels under
``airflow_hoop``. Shared by the gateway, the sensor, the trigger and the UI plugin.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, field_validator

from airflow_hoop.ledger.records import ReviewStatement, ReviewTarget

ReviewStatus = Literal[
    "PENDING", "APPROVED", "REJECTED", "REVOKED", "PROCESSING", "EXECUTED", "UNKNOWN"
]
Decision = Literal["APPROVED", "REJECTED", "REVOKED"]
Channel = Literal["airflow-ui", "gateway-api"]

#: Statuses after which a review can no longer be decided or used.
CLOSED = frozenset({"REJECTED", "REVOKED", "EXECUTED"})
MAX_REASON = 2000
MAX_JUSTIFICATION = 4000


class ReviewedBy(BaseModel):
    id: str
    name: str
    email: str = ""
    slack_id: str = ""


class ReviewGroup(BaseModel):
    """hoop's ``review_groups_data`` entry: one group's decision."""

    id: str
    group: str
    status: ReviewStatus = "PENDING"
    forced_review: bool = False
    review_date: datetime | None = None
    reviewed_by: ReviewedBy | None = None
    min_approvals: int = Field(1, description="distinct people of the group needed (ours)")
    approvers: list[str] = Field(
        default_factory=list, description="the people counted for this group (ours)"
    )


class DecisionRecord(BaseModel):
    """One decision as recorded (also in the ledger as ``review.decided``)."""

    decision: Decision
    group: str | None = None
    approver: str
    credential: str
    channel: Channel
    reason: str | None = None
    time: datetime
    ledger_seq: int | None = None
    groups: list[str] = Field(
        default_factory=list, description="the review's groups the approver was in, then"
    )
    break_glass: bool = Field(False, description="a break-glass (forced) approval")

    def describe(self, review_id: str) -> str:
        """The log line a task writes for this decision (who, how, when, why)."""
        flag = "BREAK-GLASS " if self.break_glass else ""
        return (
            f"review {review_id}: {flag}{self.decision} by {self.approver} via {self.channel} at "
            f"{self.time.isoformat()} (credential {self.credential}): "
            f"{self.reason or 'no reason given'}"
        )


class ReviewExtension(BaseModel):
    """Our fields of a review."""

    connection: str
    target: ReviewTarget
    requester: str = Field(description="the step that asked for the review")
    triggered_by: str | None = Field(None, description="the Airflow user who triggered the run")
    justification: str = ""
    command_sha256: str
    statements: list[ReviewStatement]
    parameters: list[JsonValue] = Field(
        default_factory=list,
        description="each statement's bound parameters as sent (wire.values encoding), so "
        "the approver sees the values; the ledger keeps only their digest",
    )
    context: dict[str, str] = Field(default_factory=dict)
    expires_after_seconds: int
    expires_at: datetime | None = None
    expired: bool = False
    used_count: int = 0
    executed_try: int | None = None
    decisions: list[DecisionRecord] = Field(default_factory=list)
    request_seq: int | None = None


class Review(BaseModel):
    """hoop's ``Review`` resource."""

    id: str
    session: str
    type: Literal["onetime", "jit"] = "onetime"
    access_duration: int = 0
    status: ReviewStatus
    revoke_at: datetime | None = None
    created_at: datetime
    review_groups_data: list[ReviewGroup] = Field(default_factory=list)
    time_window: JsonValue = None
    access_request_rule_name: str | None = None
    min_approvals: int = 1
    force_approval_groups: list[str] = Field(default_factory=list)
    rejection_reason: str | None = None
    airflow_hoop: ReviewExtension | None = None


class StatementIn(BaseModel):
    """One statement of the command to approve, as the step will send it."""

    model_config = ConfigDict(extra="forbid")

    script: str = Field(min_length=1)
    parameters: list[JsonValue] | dict[str, JsonValue] | None = None


class ReviewCreate(BaseModel):
    """``POST /api/airflow-hoop/reviews``: a step asks for approval of a step of its own run."""

    model_config = ConfigDict(extra="forbid")

    connection: str = Field(min_length=1)
    target_task_id: str = Field(min_length=1)
    target_map_index: int = -1
    target_try_number: int | None = Field(
        None, ge=1, description="None: the target's next try (bound when it runs)"
    )
    statements: list[StatementIn] = Field(min_length=1, max_length=1000)
    command_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    justification: str = Field("", max_length=MAX_JUSTIFICATION)
    context: dict[str, str] = Field(default_factory=dict, max_length=20)
    wait_deadline: AwareDatetime | None = Field(
        None,
        description="when the requesting task stops waiting; the gateway's webhook reminds "
        "approvers before it (docs/notifications.md)",
    )


class ReviewCreated(BaseModel):
    """The review (new or the open one for the same step and command) and a poll token."""

    review: Review
    created: bool
    poll_token: str = Field(description="reads this review's status only (for the trigger)")


class DecisionExtension(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=MAX_REASON)
    reviewed_by: str | None = Field(
        None, max_length=200, description="the Airflow user (keys with asserts_users only)"
    )
    command_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="the digest the approver was shown"
    )


class ReviewDecisionRequest(BaseModel):
    """hoop's ``ReviewRequest`` body of ``PUT /api/reviews/{id}``."""

    model_config = ConfigDict(extra="ignore")

    status: Decision
    rejection_reason: str | None = Field(None, max_length=MAX_REASON)
    time_window: JsonValue = None
    force_review: bool = False
    airflow_hoop: DecisionExtension | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def reason(self) -> str | None:
        ext = self.airflow_hoop.reason if self.airflow_hoop else None
        text = (ext or self.rejection_reason or "").strip()
        return text or None
