"""Pydantic models of hoop's session JSON, plus our extensions under ``airflow_hoop``.

hoop ignores unknown request fields, so the same request works against a hoop.dev gateway;
our gateway answers in hoop's shape and adds typed rows under ``airflow_hoop``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from airflow_hoop.ledger.records import AgentCall, MaskingRecord
from airflow_hoop.wire.session_settings import SessionSettings

#: Names the step's own Vault token by its accessor on every request of a step: the gateway
#: honours the step's identity token only while that Vault token lives (an accessor can look a
#: token up, never act as it). gateway/access/token_liveness.py.
VAULT_ACCESSOR_HEADER = "X-Hoop-Vault-Accessor"


class ExecExtension(BaseModel):
    """Our request extension: bound parameters and transaction mode."""

    model_config = ConfigDict(extra="forbid")

    parameters: list[JsonValue] | dict[str, JsonValue] | None = None
    autocommit: bool = False
    # Shell connections only (see docs/shell.md).
    cwd: str | None = Field(None, description="a directory on the gateway host to run in")
    output_encoding: str | None = Field(None, description="how to decode the output (utf-8)")
    sync_seconds: float | None = Field(
        None, ge=0, description="answer 202 after this long (at most the gateway's window)"
    )
    # SQL connections only: the hook's libpq ``options`` (wire/session_settings.py).
    session_settings: SessionSettings | None = Field(
        None, description="settings of the step's database session, applied before the script"
    )
    #: An LLM agent's tool call: the model and digests of its prompt and turn (docs/agents.md).
    agent: AgentCall | None = None


#: hoop refuses metadata keys or values of this many characters or more (422).
_MAX_METADATA_CHARS = 2500


class ExecRequest(BaseModel):
    """``POST /api/sessions`` body (hoop's SessionPostBody)."""

    model_config = ConfigDict(extra="ignore")

    connection: str = Field(min_length=1)
    script: str
    client_args: list[str] = Field(default_factory=list)
    env_vars: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=20)
    correlation_id: str | None = Field(default=None, max_length=255)
    airflow_hoop: ExecExtension | None = None

    @field_validator("metadata", mode="before")
    @classmethod
    def _hoop_metadata(cls, value: Any) -> Any:
        """hoop's rules: keys and values under 2500 characters; numbers and booleans as text."""
        if not isinstance(value, dict):
            return value
        coerced = {}
        for key, item in value.items():
            if isinstance(item, bool):
                item = "true" if item else "false"  # as hoop (Go's %v) writes them
            elif isinstance(item, (int, float)):
                item = str(item)
            if len(str(key)) >= _MAX_METADATA_CHARS or (
                isinstance(item, str) and len(item) >= _MAX_METADATA_CHARS
            ):
                raise ValueError(f"metadata keys and values must be under {_MAX_METADATA_CHARS}")
            coerced[key] = item
        return coerced

    @field_validator("correlation_id")
    @classmethod
    def _printable_ascii(cls, value: str | None) -> str | None:
        if value is not None and any(not 0x20 <= ord(ch) <= 0x7E for ch in value):
            raise ValueError("correlation_id must be printable ASCII (hoop's rule)")
        return value


class Column(BaseModel):
    name: str
    type_code: int | None = None
    type_name: str | None = None


class ShellRunInfo(BaseModel):
    """Our response extension for shell commands: what the output text alone cannot tell."""

    last_line: str = Field("", description="the output's last line, as BashOperator takes it")
    output_bytes: int = Field(0, description="bytes the command wrote, before any truncation")
    signal: int | None = None
    timed_out: bool = False
    masked: int = Field(0, description="secret values replaced in the output")


class OutputChunk(BaseModel):
    """Output of a session from ``offset`` on (``GET /api/sessions/{id}/result/stream``)."""

    text: str
    offset: int
    next_offset: int
    done: bool | None = Field(None, description="None: the gateway did not say (hoop.dev)")


class TypedResult(BaseModel):
    """Our response extension: what psycopg returned, JSON-typed (see wire.values)."""

    columns: list[Column] | None = None
    rows: list[list[JsonValue]] = Field(default_factory=list)
    rowcount: int = -1
    status_message: str | None = None
    db_user: str | None = None
    intent_seq: int | None = None
    result_seq: int | None = None
    shell: ShellRunInfo | None = None
    masking: MaskingRecord | None = Field(
        None, description="the masking policy that applied to this output, and its counts"
    )


OutputStatus = Literal["success", "failed", "running", "blocked"]


class ExecResponse(BaseModel):
    """hoop's ExecResponse. ``exit_code`` -2 means no exit code could be obtained."""

    has_review: bool = False
    session_id: str
    output: str = ""
    output_status: OutputStatus
    truncated: bool = False
    execution_time: int = 0
    exit_code: int | None = None
    ai_analysis: Any = None
    airflow_hoop: TypedResult | None = None


class ScriptData(BaseModel):
    data: str


class SessionInfo(BaseModel):
    """hoop's Session resource (the fields we read and write)."""

    id: str
    connection: str
    type: str = "database"
    connection_subtype: str | None = "postgres"
    verb: str = "exec"
    status: Literal["open", "ready", "done"]
    exit_code: int | None = None
    user: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    start_date: datetime
    end_date: datetime | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    correlation_id: str | None = None
    script: ScriptData | None = None
    review: Any = None
    output: str | None = Field(default=None, description="extension: the session's output text")
    output_status: OutputStatus | None = None
    truncated: bool = False
    metrics: dict[str, Any] | None = Field(
        default=None, description="hoop.dev: event_size, truncated, data_masking counts"
    )
    airflow_hoop: TypedResult | None = None


class SessionList(BaseModel):
    data: list[SessionInfo]
    total: int | None
    total_is_capped: bool = False
    has_next_page: bool = False


#: ``POST /api/airflow-hoop/steps/end?revoke=``: answer after the Vault revocations
#: (``wait``) or once the step's connections are closed and they have started (``background``).
RevokeMode = Literal["wait", "background"]


class StepEndResponse(BaseModel):
    """``POST /api/airflow-hoop/steps/end``: what the gateway released for the step.

    ``revocation`` ``in-progress``: the users in ``revoked_db_users`` can no longer be used
    through the gateway (their connections are closed) and are being revoked in Vault; each
    gets its ``credential.revoked`` record once revoked.
    """

    step: str
    revoked_db_users: list[str] = Field(default_factory=list)
    revocation: Literal["done", "in-progress"] = "done"
    checkpoint: CheckpointNote | None = Field(
        None, description="the ledger's signing state at the step's end; None: checkpoints off"
    )


class CheckpointNote(BaseModel):
    """At a step's end: the newest signed checkpoint, and by when one covers the step.

    The gateway signs a checkpoint once ``every_records`` records arrived since the last, or
    ``interval_seconds`` after it while any arrived, looking every ``poll_seconds``: so every
    record appended before the step ended is covered by ``due_by`` (while a gateway runs).
    """

    checkpoint_seq: int | None = Field(None, description="ledger seq of the newest checkpoint")
    covers_through_seq: int = Field(0, description="the last seq that checkpoint signs")
    every_records: int
    interval_seconds: float
    due_by: datetime


class HttpError(BaseModel):
    """hoop's error body."""

    message: str
