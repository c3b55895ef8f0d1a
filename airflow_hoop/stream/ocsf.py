"""OCSF 1.1 events made of ledger records: the pydantic models of what the stream emits.

One event class per record kind (``ocsf_mapping.py`` maps; docs/signals.md has the table):
commands are API Activity (6003), refusals and reviews Authorize Session (3003), dynamic
database users Account Change (3001), checkpoints the Base Event (0). Every event carries the
ledger's seq, hash, previous hash and (when already signed) the covering checkpoint under
``unmapped.airflow_hoop``, with the record's body as stored. ``EVENT.validate_json(line)``
checks one delivered line against these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from airflow_hoop import __version__

OCSF_VERSION = "1.1.0"
PRODUCT = "airflow-hoop"


class _Obj(BaseModel):
    # An OCSF object: extra keys are refused, so a mapping mistake fails a test, not a SIEM.
    model_config = ConfigDict(extra="forbid")


class Product(_Obj):
    name: str = PRODUCT
    vendor_name: str = PRODUCT
    version: str = __version__


class Metadata(_Obj):
    version: str = OCSF_VERSION
    product: Product = Field(default_factory=Product)
    #: ``ledger:<seq>``: unique per record, stable across deliveries (a SIEM de-duplicates on it)
    uid: str
    log_name: Literal["ledger"] = "ledger"
    #: the record kind (``session.intent``...)
    event_code: str
    original_time: str
    #: the session or review the record belongs to
    correlation_uid: str | None = None


class User(_Obj):
    name: str
    uid: str | None = None
    type_id: Literal[0, 1, 3, 99] = 0  # Unknown, User, System, Other


class Session(_Obj):
    uid: str


class Actor(_Obj):
    user: User
    session: Session | None = None
    app_name: str | None = None


class Service(_Obj):
    name: str


class Api(_Obj):
    operation: str
    service: Service


class Endpoint(_Obj):
    svc_name: str


class Resource(_Obj):
    type: str
    name: str | None = None
    uid: str | None = None


class CheckpointRef(_Obj):
    """The checkpoint whose signature covers the record (its ledger seq and number)."""

    seq: int
    number: int


class LedgerExtension(_Obj):
    """Where the event stands in the ledger: enough to find and verify the record."""

    seq: int = Field(ge=1)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    kind: str
    step: dict[str, Any] | None = None
    #: None while no checkpoint covers the record yet: a later ``checkpoint`` event covers
    #: ``first_seq..last_seq`` (its body's statement).
    covering_checkpoint: CheckpointRef | None = None
    #: the record's body exactly as stored (masked or digested values only)
    body: dict[str, Any]


class Unmapped(_Obj):
    airflow_hoop: LedgerExtension


class _Event(_Obj):
    """Attributes every OCSF event has (base event)."""

    category_name: str
    class_name: str
    activity_id: int
    activity_name: str
    type_uid: int
    time: int = Field(description="milliseconds since the epoch (the record's time)")
    severity_id: Literal[1] = 1
    severity: Literal["Informational"] = "Informational"
    status_id: Literal[0, 1, 2, 99] = 0  # Unknown, Success, Failure, Other
    status: str = "Unknown"
    status_detail: str | None = None
    message: str
    metadata: Metadata
    actor: Actor
    unmapped: Unmapped

    @model_validator(mode="after")
    def _type_uid(self) -> _Event:
        class_uid: int = getattr(self, "class_uid")  # noqa: B009 (declared by each subclass)
        if self.type_uid != class_uid * 100 + self.activity_id:
            raise ValueError("type_uid must be class_uid * 100 + activity_id")
        return self


class ApiActivity(_Event):
    class_uid: Literal[6003] = 6003
    category_uid: Literal[6] = 6
    category_name: str = "Application Activity"
    class_name: str = "API Activity"
    activity_id: Literal[0, 1, 2, 3, 4, 99]
    api: Api
    src_endpoint: Endpoint
    resources: list[Resource] = Field(default_factory=list)


class AuthorizeSession(_Event):
    class_uid: Literal[3003] = 3003
    category_uid: Literal[3] = 3
    category_name: str = "Identity & Access Management"
    class_name: str = "Authorize Session"
    activity_id: Literal[0, 1, 2, 99]
    user: User
    privileges: list[str] = Field(default_factory=list)
    resources: list[Resource] = Field(default_factory=list)


class AccountChange(_Event):
    class_uid: Literal[3001] = 3001
    category_uid: Literal[3] = 3
    category_name: str = "Identity & Access Management"
    class_name: str = "Account Change"
    activity_id: Literal[0, 1, 6, 99]
    user: User


class BaseEvent(_Event):
    class_uid: Literal[0] = 0
    category_uid: Literal[0] = 0
    category_name: str = "Uncategorized"
    class_name: str = "Base Event"
    activity_id: Literal[0, 99]


OcsfEvent = Annotated[
    ApiActivity | AuthorizeSession | AccountChange | BaseEvent, Field(discriminator="class_uid")
]
EVENT = TypeAdapter(OcsfEvent)
