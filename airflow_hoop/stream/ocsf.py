"""OCSF 1.1 events made of ledger records: the models of what the stream emits, and the mapping.

One event class per record kind (docs/signals.md has the table): commands are API Activity
(6003), refusals and reviews Authorize Session (3003), dynamic database users Account Change
(3001), checkpoints the Base Event (0). Every event carries the ledger's seq, hash, previous
hash and (when already signed) the covering checkpoint under ``unmapped.airflow_hoop``, with
the record's body as stored. The mapping copies; it never adds a value the record does not
hold (the ledger holds output only as a digest or masked counts, parameters only by digest).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
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


# -- the mapping -------------------------------------------------------------------------------
class RecordView:
    """A parsed ledger record with its place in the chain, as the mapping reads it."""

    __slots__ = ("body", "checkpoint", "hash", "record", "seq")

    def __init__(
        self, seq: int, hash_: str, record: dict[str, Any], checkpoint: CheckpointRef | None
    ) -> None:
        self.seq, self.hash, self.record, self.checkpoint = seq, hash_, record, checkpoint
        self.body: dict[str, Any] = record["body"]

    def common(self, class_uid: int, activity_id: int, activity: str) -> dict[str, Any]:
        record, body = self.record, self.body
        step = record.get("step")
        actor = Actor(
            user=self.common_user(),
            session=Session(uid=body["session_id"]) if "session_id" in body else None,
            app_name="airflow" if step else PRODUCT,
        )
        return {
            "activity_id": activity_id,
            "activity_name": activity,
            "type_uid": class_uid * 100 + activity_id,
            "time": _millis(record["time"]),
            "message": f"{body['kind']} {self.seq}",
            "metadata": Metadata(
                uid=f"ledger:{self.seq}",
                event_code=body["kind"],
                original_time=record["time"],
                correlation_uid=body.get("session_id") or body.get("review_id"),
            ),
            "actor": actor,
            "unmapped": Unmapped(
                airflow_hoop=LedgerExtension(
                    seq=self.seq,
                    hash=self.hash,
                    prev_hash=record["prev_hash"],
                    kind=body["kind"],
                    step=step,
                    covering_checkpoint=self.checkpoint,
                    body=body,
                )
            ),
        }

    def common_user(self) -> User:
        """Who caused the record: the step (a user of the gateway) or the gateway itself."""
        return User(name=self.record["actor"], type_id=1 if self.record.get("step") else 3)

    def connection(self) -> list[Resource]:
        return [Resource(type="connection", name=self.body["connection"])]


def _millis(text: str) -> int:
    # Python 3.10's fromisoformat does not read "Z".
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


_SQL_ACTIVITY = {"read": (2, "Read"), "write": (3, "Update")}
_STATUS = {"success": (1, "Success")}
_DECISION = {"APPROVED": (1, "Success"), "REJECTED": (2, "Failure")}


def _intent(view: RecordView) -> ApiActivity:
    body = view.body
    activity_id, name = _SQL_ACTIVITY.get(body.get("label") or "", (99, "Execute"))
    return ApiActivity(
        **view.common(6003, activity_id, name),
        api=Api(operation=body["kind"], service=Service(name=body["connection"])),
        src_endpoint=_origin(view),
        resources=view.connection(),
        status_detail="accepted; the result record follows",
    )


def _result(view: RecordView) -> ApiActivity:
    body = view.body
    status_id, status = _STATUS.get(body["status"], (2, "Failure"))
    detail = body["status"] + (f" (SQLSTATE {body['sqlstate']})" if body.get("sqlstate") else "")
    return ApiActivity(
        **view.common(6003, 99, "Result"),
        api=Api(operation=body["kind"], service=Service(name=body["connection"])),
        src_endpoint=_origin(view),
        resources=view.connection(),
        status_id=status_id,
        status=status,
        status_detail=detail,
    )


def _refused(view: RecordView) -> AuthorizeSession:
    body = view.body
    return AuthorizeSession(
        **view.common(3003, 1, "Assign Privileges"),
        user=view.common_user(),
        privileges=[f"connection:{body['connection']}"],
        resources=view.connection(),
        status_id=2,
        status="Failure",
        status_detail=body["reason"],
    )


def _review(activity_id: int, activity: str) -> Callable[[RecordView], AuthorizeSession]:
    def mapper(view: RecordView) -> AuthorizeSession:
        body = view.body
        status_id, status = 0, "Unknown"
        user = view.common_user()
        if body["kind"] == "review.decided":
            status_id, status = _DECISION.get(body["decision"], (99, "Other"))
            user = User(name=body["approver"], uid=body["credential"], type_id=1)
        elif body["kind"] == "review.executed":
            status_id, status = 1, "Success"
        return AuthorizeSession(
            **view.common(3003, activity_id, activity),
            user=user,
            privileges=[f"command:{body['command_sha256']}"],
            resources=[*view.connection(), Resource(type="review", uid=body["review_id"])],
            status_id=status_id,
            status=status,
            status_detail=body.get("status") or body.get("decision"),
        )

    return mapper


def _decided(view: RecordView) -> AuthorizeSession:
    if view.body["decision"] == "REVOKED":
        return _review(99, "Revoke Privileges")(view)
    return _review(1, "Assign Privileges")(view)


def _credential(activity_id: int, activity: str) -> Callable[[RecordView], AccountChange]:
    def mapper(view: RecordView) -> AccountChange:
        body = view.body
        return AccountChange(
            **view.common(3001, activity_id, activity),
            user=User(name=body["db_user"], uid=body["lease_id"], type_id=99),
            status_id=1,
            status="Success",
            status_detail=body.get("reason"),
        )

    return mapper


def _checkpoint(view: RecordView) -> BaseEvent:
    return BaseEvent(**view.common(0, 99, "Checkpoint"), status_id=1, status="Success")


def _origin(view: RecordView) -> Endpoint:
    return Endpoint(svc_name="airflow" if view.record.get("step") else PRODUCT)


#: One mapper per record kind; a kind the mapping does not know is a Base Event "Other".
MAPPERS: dict[str, Callable[[RecordView], _Event]] = {
    "session.intent": _intent,
    "session.result": _result,
    "policy.refused": _refused,
    "review.requested": _review(99, "Request Privileges"),
    "review.decided": _decided,
    "review.executed": _review(99, "Use Privileges"),
    "credential.issued": _credential(1, "Create"),
    "credential.revoked": _credential(6, "Delete"),
    "checkpoint": _checkpoint,
}


def to_ocsf(view: RecordView) -> _Event:
    """The OCSF event of one record (validated by its model as it is built)."""
    mapper = MAPPERS.get(view.body.get("kind", ""))
    if mapper is None:
        return BaseEvent(**view.common(0, 99, "Other"))
    return mapper(view)
