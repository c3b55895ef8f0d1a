"""Ledger record models: what each event says, and nothing secret.

Credentials appear only as lease ids and database user names; output appears only as a
digest (or masked); parameters appear only as a digest and a count.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from airflow_hoop.ledger.canonical import canonical


class StepRef(BaseModel):
    """Who ran a step: one try of one task instance of one DAG run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dag_id: str
    task_id: str
    run_id: str
    try_number: int = 1
    map_index: int = -1
    triggered_by: str | None = None

    @property
    def key(self) -> str:
        """Stable text key of the step (also the Vault JWT subject)."""
        base = f"{self.dag_id}/{self.task_id}/{self.run_id}/{self.try_number}"
        return base if self.map_index < 0 else f"{base}/{self.map_index}"


class RecordKind(str, Enum):
    SESSION_INTENT = "session.intent"
    SESSION_RESULT = "session.result"
    POLICY_REFUSED = "policy.refused"
    CREDENTIAL_ISSUED = "credential.issued"
    CREDENTIAL_REVOKED = "credential.revoked"
    REVIEW_REQUESTED = "review.requested"
    REVIEW_DECIDED = "review.decided"
    CHECKPOINT = "checkpoint"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionIntent(_Body):
    """Written before a command runs; no command runs without it."""

    kind: Literal["session.intent"] = "session.intent"
    session_id: str
    connection: str
    script: str
    script_sha256: str
    parameters_sha256: str | None = None
    parameter_count: int = 0
    autocommit: bool = False
    db_user: str | None = None


class SessionResult(_Body):
    """Written after a command ends, whatever the outcome."""

    kind: Literal["session.result"] = "session.result"
    session_id: str
    connection: str
    status: Literal["success", "failed", "killed", "interrupted"]
    exit_code: int
    rowcount: int = -1
    rows_returned: int = 0
    status_message: str | None = None
    output_sha256: str
    duration_ms: float
    truncated: bool = False
    error: str | None = None


class PolicyRefused(_Body):
    kind: Literal["policy.refused"] = "policy.refused"
    connection: str
    reason: str
    script_sha256: str | None = None


class CredentialIssued(_Body):
    kind: Literal["credential.issued"] = "credential.issued"
    connection: str
    lease_id: str
    db_user: str
    vault_role: str
    ttl_seconds: int


class CredentialRevoked(_Body):
    kind: Literal["credential.revoked"] = "credential.revoked"
    connection: str
    lease_id: str
    db_user: str
    reason: Literal["step-end", "expired", "error", "shutdown"]


RecordBody = Annotated[
    SessionIntent | SessionResult | PolicyRefused | CredentialIssued | CredentialRevoked,
    Field(discriminator="kind"),
]


class LedgerRecord(BaseModel):
    """One chained record. ``hash_n = SHA-256(hash_{n-1} || canonical(record_n))``."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    seq: int
    time: datetime
    prev_hash: str
    step: StepRef | None = None
    actor: str = Field(description="who caused the record: the step key or the gateway")
    body: RecordBody

    def canonical_bytes(self) -> bytes:
        return canonical(self.to_json_dict())

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
