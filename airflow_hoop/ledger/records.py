"""Ledger record models: what each event says, and nothing secret.

Credentials appear only as lease ids and database user names; output appears only as a
digest (or masked); parameters appear only as a digest and a count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from airflow_hoop.ledger.canonical import canonical

_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")


class StepRef(BaseModel):
    """Who ran a step: one try of one task instance of one DAG run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dag_id: str
    task_id: str
    run_id: str
    try_number: int = 1
    map_index: int = -1
    triggered_by: str | None = None
    #: Who attests the fields above: "airflow-issuer" (claims read from Airflow's metadata
    #: database by the issuer) or "trusted-workers" (asserted by the worker that signed).
    #: Absent in records written before the issuer existed. The fields below come with it.
    attested_by: str | None = Field(default=None, exclude_if=lambda v: v is None)
    #: The task instance's id: one per try (Airflow's own key for it).
    ti_id: str | None = Field(default=None, exclude_if=lambda v: v is None)
    #: The DAG bundle the task's code came from, and its version (a git commit, when any).
    bundle_name: str | None = Field(default=None, exclude_if=lambda v: v is None)
    bundle_version: str | None = Field(default=None, exclude_if=lambda v: v is None)

    @property
    def key(self) -> str:
        """Stable text key of the step (also the Vault JWT subject)."""
        return self.key_of(self.__dict__)

    @staticmethod
    def key_of(step: Mapping[str, Any]) -> str:
        """The key of a step given as a mapping (a record's ``step`` as parsed JSON)."""
        base = f"{step['dag_id']}/{step['task_id']}/{step['run_id']}/{step.get('try_number', 1)}"
        map_index = step.get("map_index", -1)
        return base if map_index < 0 else f"{base}/{map_index}"

    def jwt_claims(self) -> dict[str, str]:
        """Claims for the workload JWT (Vault claim_mappings copy them into token metadata)."""
        claims = {
            "sub": self.key,
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "try_number": str(self.try_number),
            "map_index": str(self.map_index),
        }
        if self.triggered_by:
            claims["triggered_by"] = self.triggered_by
        for name in ("ti_id", "bundle_name", "bundle_version", "attested_by"):
            value = getattr(self, name)
            if value:
                claims[name] = value
        return claims

    @staticmethod
    def provenance_of(step: Mapping[str, Any]) -> str:
        """Who vouches for a step's claims and which code it ran, as a reviewer reads it."""
        attested = step.get("attested_by")
        if attested == "airflow-issuer":
            bundle = step.get("bundle_name") or "(unknown bundle)"
            version = step.get("bundle_version") or "(unversioned)"
            return (
                f"ran code from bundle {bundle} at version {version}; claims attested by "
                "Airflow's identity issuer"
            )
        if attested == "trusted-workers":
            return "claims asserted by the worker (trusted workers mode)"
        return "claims not attested (recorded before the identity issuer)"

    @property
    def provenance(self) -> str:
        """``provenance_of`` this step."""
        return self.provenance_of(self.__dict__)

    @property
    def correlation_id(self) -> str:
        """hoop's correlation_id: at most 255 printable ASCII characters."""
        return _NOT_PRINTABLE.sub("_", self.key)[:255]

    def metadata(self) -> dict[str, str]:
        """hoop's session metadata (at most 20 keys)."""
        return {k: v for k, v in self.jwt_claims().items() if k != "sub"}


class RecordKind(str, Enum):
    SESSION_INTENT = "session.intent"
    SESSION_RESULT = "session.result"
    POLICY_REFUSED = "policy.refused"
    CREDENTIAL_ISSUED = "credential.issued"
    CREDENTIAL_REVOKED = "credential.revoked"
    REVIEW_REQUESTED = "review.requested"
    REVIEW_DECIDED = "review.decided"
    REVIEW_EXECUTED = "review.executed"
    CHECKPOINT = "checkpoint"
    GATEWAY_KEY = "gateway.key"
    LEDGER_ALARM = "ledger.alarm"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _absent_if_none(value: Any) -> bool:
    return value is None


#: What PostgreSQL's parser makes of a SQL script (``ledger/sql_label.py``).
StatementLabel = Literal["read", "write", "transaction_control"]


class ShellIntent(_Body):
    """What a shell command was started with. Environment values are never recorded: names only."""

    argv: list[str]
    env_names: list[str]
    cwd: str | None = None
    run_as: str | None = None
    timeout_seconds: float
    max_output_bytes: int
    limits: dict[str, int]
    #: "bubblewrap" or "none"; absent in records written before the sandbox existed.
    sandbox: str | None = Field(default=None, exclude_if=_absent_if_none)
    #: the sandbox's network: "none" or "host"; absent without a sandbox.
    network: str | None = Field(default=None, exclude_if=_absent_if_none)


class ShellExit(_Body):
    """How a shell command ended, beyond its exit code."""

    signal: int | None = None
    timed_out: bool = False
    output_bytes: int
    raw_output_sha256: str
    masked: int = 0
    workdir_removed: bool = True


class MaskingRecord(BaseModel):
    """The masking policy that applied to a command's output, and what it did (counts only).

    The shape follows hoop's ``metrics.data_masking`` (``info_types``, ``total_redact_count``,
    ``err_count``); it never holds a masked value, only rule names, column names and counts.
    """

    model_config = ConfigDict(extra="forbid")

    policy: str
    version: str = Field(description="SHA-256 of the policy's canonical JSON")
    mode: Literal["strict", "best-effort"]
    unmasked_to_task: bool = Field(
        False, description="the task received unmasked output (allowed by the policy)"
    )
    info_types: dict[str, int] = Field(
        default_factory=dict, description="redactions per rule (column rule or detector name)"
    )
    columns: dict[str, int] = Field(default_factory=dict, description="redactions per column")
    total_redact_count: int = 0
    err_count: int = 0
    errors: list[str] = Field(default_factory=list, description="what failed (no values)")
    hmac_key: str | None = Field(None, description="'<name> v<version>' when hashing applied")


class AgentCall(_Body):
    """The agent turn behind a tool call of an LLM agent step (docs/agents.md).

    Digests, not text: the prompt and the model's turn are recorded as SHA-256 of their
    canonical JSON; their text only when the step's ``record_text`` setting says so.
    """

    model: str = Field(max_length=200, description="the model's name, as pydantic-ai names it")
    tool: str = Field(max_length=200, description="the tool the model called")
    tool_call_id: str = Field(max_length=200)
    turn: int = Field(ge=0, description="which model turn of the run made the call (0-based)")
    prompt_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    turn_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    approved_call: bool = Field(False, description="the call ran after an approval pause")
    prompt_text: str | None = Field(default=None, max_length=20000, exclude_if=_absent_if_none)
    turn_text: str | None = Field(default=None, max_length=20000, exclude_if=_absent_if_none)


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
    # Shell commands only; absent (not null) for SQL so SQL records keep their exact bytes.
    shell: ShellIntent | None = Field(default=None, exclude_if=_absent_if_none)
    # SQL only, from PostgreSQL's parser (``ledger/sql_label.py``): what the approval rule and
    # the report went by. Absent in records written before labels were recorded.
    label: StatementLabel | None = Field(default=None, exclude_if=_absent_if_none)
    #: True: run unapproved, as the step's READ user in a read-only transaction the gateway
    #: opened (PostgreSQL refuses writes). Absent otherwise (older records' bytes).
    read_only: bool | None = Field(default=None, exclude_if=_absent_if_none)
    #: The session settings the step asked for (the hook's libpq ``options``), as sent, applied
    #: before the script. Absent when none were asked for (older records' bytes).
    session_settings: dict[str, str] | None = Field(default=None, exclude_if=_absent_if_none)
    #: An agent's tool call: the model and digests of the prompt and turn. Absent otherwise.
    agent: AgentCall | None = Field(default=None, exclude_if=_absent_if_none)


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
    #: PostgreSQL's SQLSTATE of a failed statement (25006: a write refused in a read-only
    #: transaction; 42501: a privilege the user lacks). Absent when none.
    sqlstate: str | None = Field(default=None, exclude_if=_absent_if_none)
    shell: ShellExit | None = Field(default=None, exclude_if=_absent_if_none)
    # Only when the connection has a masking policy; absent otherwise (older records' bytes).
    masking: MaskingRecord | None = Field(default=None, exclude_if=_absent_if_none)


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
    # "interrupted": revoked by the recovery sweep after the gateway that held it died.
    #: token-revoked: the step's Vault token was found revoked (gateway/access/token_liveness.py)
    reason: Literal["step-end", "expired", "error", "shutdown", "interrupted", "token-revoked"]


class ReviewStatement(BaseModel):
    """One statement of a command under review (scripts are recorded, parameters by digest)."""

    model_config = ConfigDict(extra="forbid")

    script: str
    parameters_sha256: str | None = None
    sha256: str
    needs_approval: bool = Field(
        True, description="false for statements the rule exempts (read-only, COMMIT...)"
    )


class ReviewTarget(BaseModel):
    """The step an approval is for; ``try_number`` None means the task instance's next try."""

    model_config = ConfigDict(extra="forbid")

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    try_number: int | None = None


class ReviewRequested(_Body):
    """A step asked for a human approval of a command of another (or its own) step."""

    kind: Literal["review.requested"] = "review.requested"
    review_id: str
    session_id: str
    connection: str
    target: ReviewTarget
    command_sha256: str
    statements: list[ReviewStatement]
    justification: str = ""
    triggered_by: str | None = None
    groups: list[str]
    min_approvals: int
    expires_after_seconds: int
    rule: str | None = None
    #: distinct people each group needs, where more than one; absent in older records.
    group_min_approvals: dict[str, int] | None = Field(default=None, exclude_if=_absent_if_none)
    #: groups whose members may approve alone, flagged (hoop's force_approve_groups).
    break_glass_groups: list[str] | None = Field(default=None, exclude_if=_absent_if_none)


class ReviewDecided(_Body):
    """One approver's decision: who (the asserted user and the credential), why, how."""

    kind: Literal["review.decided"] = "review.decided"
    review_id: str
    connection: str
    command_sha256: str
    decision: Literal["APPROVED", "REJECTED", "REVOKED"]
    status: str = Field(description="the review's status after this decision")
    group: str | None = None
    approver: str
    credential: str
    channel: Literal["airflow-ui", "gateway-api"]
    reason: str | None = None
    expires_at: datetime | None = None
    #: True for a break-glass approval (it approved the review alone); absent otherwise.
    break_glass: bool | None = Field(default=None, exclude_if=_absent_if_none)


class ReviewExecuted(_Body):
    """An approved statement was accepted for execution: the approval is used (once)."""

    kind: Literal["review.executed"] = "review.executed"
    review_id: str
    connection: str
    command_sha256: str
    statement_index: int
    statement_sha256: str
    try_number: int
    remaining: int = Field(description="approved statements of the command not yet run")


class CheckpointStatement(BaseModel):
    """What a checkpoint signs: the chain up to ``last_seq`` had the head ``head_hash``.

    ``prev_checkpoint`` is the SHA-256 of the previous statement's canonical bytes (64 zeros
    for the first), so checkpoints form a chain of their own. The signature is plain Ed25519
    over ``SHA-256(canonical(statement))``: see ``airflow_hoop.ledger.checkpoint``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: int = Field(ge=1)
    first_seq: int = Field(ge=1, description="first record covered (previous last_seq + 1)")
    last_seq: int = Field(ge=0)
    head_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    time: datetime
    prev_checkpoint: str = Field(pattern=r"^[0-9a-f]{64}$")
    # Absent from checkpoints signed before batch signatures existed (they still verify).
    batches: int | None = Field(
        None,
        ge=0,
        exclude_if=_absent_if_none,
        description="batch signatures ending in first_seq..last_seq, each checked",
    )
    unsigned_from: int | None = Field(
        None,
        exclude_if=_absent_if_none,
        description="first record the signer found under no valid batch signature",
    )


class _TransitSigned(_Body):
    """A statement signed by Vault's transit checkpoint key (``ledger/checkpoint.py``)."""

    key_name: str
    key_version: int = Field(ge=1)
    signature: str = Field(description="base64 Ed25519 signature made by Vault transit")


class Checkpoint(_TransitSigned):
    """A signed checkpoint: written by the gateway into the ledger and to the anchor sink."""

    kind: Literal["checkpoint"] = "checkpoint"
    statement: CheckpointStatement


class KeyCertificateStatement(BaseModel):
    """What Vault's checkpoint key certifies: this Ed25519 key signs one gateway process's
    batches between ``not_before`` and ``not_after`` (``ledger/batch.py``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A field no checkpoint statement has: one signed statement never passes for the other.
    purpose: Literal["gateway batch key"] = "gateway batch key"
    key_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="SHA-256 of the key, 32 hex")
    public_key: str = Field(description="base64 of the raw 32-byte Ed25519 public key")
    process: str = Field(description="the gateway process (host-pid-random instance id)")
    replica: str = Field(description="the gateway replica (host name)")
    not_before: datetime
    not_after: datetime


class GatewayKeyCertified(_TransitSigned):
    """A gateway process's batch key, certified by Vault's transit checkpoint key."""

    kind: Literal["gateway.key"] = "gateway.key"
    statement: KeyCertificateStatement


class LedgerAlarm(_Body):
    """A gateway found a ledger head no certified gateway key signed, and refused to chain
    its batch after it; this record names the head (``audit verify`` fails there)."""

    kind: Literal["ledger.alarm"] = "ledger.alarm"
    found_seq: int
    problem: str


class SettingsChanged(_Body):
    """The gateway applied a new version of its settings file (SIGHUP), without a restart.

    ``settings_sha256`` and ``previous_sha256`` are SHA-256 of the canonical JSON of the
    whole settings with every secret field masked (``gateway/settings_reload.py``): a reviewer
    holding the file computes the same digest; no secret enters the record. Added after the
    first records: a ledger without settings changes holds none of this kind.
    """

    kind: Literal["gateway.settings_changed"] = "gateway.settings_changed"
    settings_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    previous_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    changed: list[str] = Field(description="what differs, e.g. connections.warehouse.allowed_dags")
    instance: str = Field(description="the gateway process that reloaded (host-pid-random)")


RecordBody = Annotated[
    SessionIntent
    | SessionResult
    | PolicyRefused
    | CredentialIssued
    | CredentialRevoked
    | ReviewRequested
    | ReviewDecided
    | ReviewExecuted
    | Checkpoint
    | SettingsChanged
    | GatewayKeyCertified
    | LedgerAlarm,
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
