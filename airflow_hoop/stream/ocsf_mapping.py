"""Ledger records to OCSF 1.1 events (the models are ``ocsf.py``; the table is docs/signals.md).

The events are built as plain dicts in the models' shape and encoded with msgspec: building
and validating pydantic models costs ~30 µs a record, which alone would hold the stream under
its 20,000 records/s. ``OcsfFormat(validate=True)`` validates every event against the models
at run time; the tests validate every kind of event the mapping makes.

The mapping copies; it never adds a value the record does not hold (the ledger holds output
only as a digest or masked counts, parameters only by digest, credentials by lease id).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from airflow_hoop import __version__
from airflow_hoop.stream.ocsf import OCSF_VERSION, PRODUCT, CheckpointRef

#: class_uid -> (class_name, category_uid, category_name)
CLASSES = {
    6003: ("API Activity", 6, "Application Activity"),
    3003: ("Authorize Session", 3, "Identity & Access Management"),
    3001: ("Account Change", 3, "Identity & Access Management"),
    0: ("Base Event", 0, "Uncategorized"),
}
_PRODUCT = {"name": PRODUCT, "vendor_name": PRODUCT, "version": __version__}
_STATUS_NAME = {0: "Unknown", 1: "Success", 2: "Failure", 99: "Other"}


class RecordView:
    """A parsed ledger record with its place in the chain, as the mappers read it."""

    __slots__ = ("body", "checkpoint", "hash", "record", "seq")

    def __init__(
        self, seq: int, hash_: str, record: dict[str, Any], checkpoint: CheckpointRef | None
    ) -> None:
        self.seq, self.hash, self.record, self.checkpoint = seq, hash_, record, checkpoint
        self.body: dict[str, Any] = record["body"]

    def event(
        self,
        class_uid: int,
        activity_id: int,
        activity: str,
        status_id: int = 0,
        status_detail: str | None = None,
        **attributes: Any,
    ) -> dict[str, Any]:
        """The event: the attributes every class has, then the class's own."""
        record, body = self.record, self.body
        class_name, category_uid, category_name = CLASSES[class_uid]
        step = record.get("step")
        actor: dict[str, Any] = {"user": self.actor_user()}
        if "session_id" in body:
            actor["session"] = {"uid": body["session_id"]}
        actor["app_name"] = "airflow" if step else PRODUCT
        metadata: dict[str, Any] = {
            "version": OCSF_VERSION,
            "product": _PRODUCT,
            "uid": f"ledger:{self.seq}",
            "log_name": "ledger",
            "event_code": body["kind"],
            "original_time": record["time"],
        }
        correlation = body.get("session_id") or body.get("review_id")
        if correlation:
            metadata["correlation_uid"] = correlation
        ext: dict[str, Any] = {
            "seq": self.seq,
            "hash": self.hash,
            "prev_hash": record["prev_hash"],
            "kind": body["kind"],
        }
        if step is not None:
            ext["step"] = step
        if self.checkpoint is not None:
            ext["covering_checkpoint"] = {
                "seq": self.checkpoint.seq,
                "number": self.checkpoint.number,
            }
        ext["body"] = body
        event: dict[str, Any] = {
            "class_uid": class_uid,
            "class_name": class_name,
            "category_uid": category_uid,
            "category_name": category_name,
            "activity_id": activity_id,
            "activity_name": activity,
            "type_uid": class_uid * 100 + activity_id,
            "time": _millis(record["time"]),
            "severity_id": 1,
            "severity": "Informational",
            "status_id": status_id,
            "status": _STATUS_NAME[status_id],
            "message": f"{body['kind']} {self.seq}",
            "metadata": metadata,
            "actor": actor,
        }
        if status_detail is not None:
            event["status_detail"] = status_detail
        event.update(attributes)
        event["unmapped"] = {"airflow_hoop": ext}
        return event

    def actor_user(self) -> dict[str, Any]:
        """Who caused the record: the step (a user of the gateway) or the gateway itself."""
        return {"name": self.record["actor"], "type_id": 1 if self.record.get("step") else 3}

    def connection(self) -> list[dict[str, Any]]:
        return [{"type": "connection", "name": self.body["connection"]}]

    def api(self) -> dict[str, Any]:
        return {"operation": self.body["kind"], "service": {"name": self.body["connection"]}}

    def origin(self) -> dict[str, Any]:
        return {"svc_name": "airflow" if self.record.get("step") else PRODUCT}


def _millis(text: str) -> int:
    # Python 3.10's fromisoformat does not read "Z".
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


_SQL_ACTIVITY = {"read": (2, "Read"), "write": (3, "Update")}
_DECISION = {"APPROVED": 1, "REJECTED": 2}

Mapper = Callable[[RecordView], dict[str, Any]]


def _intent(view: RecordView) -> dict[str, Any]:
    activity_id, name = _SQL_ACTIVITY.get(view.body.get("label") or "", (99, "Execute"))
    return view.event(
        6003,
        activity_id,
        name,
        status_detail="accepted; the result record follows",
        api=view.api(),
        src_endpoint=view.origin(),
        resources=view.connection(),
    )


def _result(view: RecordView) -> dict[str, Any]:
    body = view.body
    sqlstate = f" (SQLSTATE {body['sqlstate']})" if body.get("sqlstate") else ""
    return view.event(
        6003,
        99,
        "Result",
        status_id=1 if body["status"] == "success" else 2,
        status_detail=body["status"] + sqlstate,
        api=view.api(),
        src_endpoint=view.origin(),
        resources=view.connection(),
    )


def _refused(view: RecordView) -> dict[str, Any]:
    return view.event(
        3003,
        1,
        "Assign Privileges",
        status_id=2,
        status_detail=view.body["reason"],
        user=view.actor_user(),
        privileges=[f"connection:{view.body['connection']}"],
        resources=view.connection(),
    )


def _review(activity_id: int, activity: str, status_id: int = 0) -> Mapper:
    def mapper(view: RecordView) -> dict[str, Any]:
        body = view.body
        user = view.actor_user()
        status = status_id
        if body["kind"] == "review.decided":
            status = _DECISION.get(body["decision"], 99)
            user = {"name": body["approver"], "uid": body["credential"], "type_id": 1}
        return view.event(
            3003,
            activity_id,
            activity,
            status_id=status,
            status_detail=body.get("status") or body.get("decision"),
            user=user,
            privileges=[f"command:{body['command_sha256']}"],
            resources=[*view.connection(), {"type": "review", "uid": body["review_id"]}],
        )

    return mapper


_APPROVAL = _review(1, "Assign Privileges")
_REVOCATION = _review(99, "Revoke Privileges")


def _decided(view: RecordView) -> dict[str, Any]:
    return (_REVOCATION if view.body["decision"] == "REVOKED" else _APPROVAL)(view)


def _credential(activity_id: int, activity: str) -> Mapper:
    def mapper(view: RecordView) -> dict[str, Any]:
        body = view.body
        return view.event(
            3001,
            activity_id,
            activity,
            status_id=1,
            status_detail=body.get("reason"),
            user={"name": body["db_user"], "uid": body["lease_id"], "type_id": 99},
        )

    return mapper


def _checkpoint(view: RecordView) -> dict[str, Any]:
    return view.event(0, 99, "Checkpoint", status_id=1)


def _settings_changed(view: RecordView) -> dict[str, Any]:
    # A change of the enforcement point's policy: the SIEM sees which parts and the digest.
    changed = ", ".join(view.body["changed"])
    return view.event(0, 99, "Settings Changed", status_id=1, status_detail=changed)


def _key_certified(view: RecordView) -> dict[str, Any]:
    return view.event(0, 99, "Gateway Key Certified", status_id=1)


def _alarm(view: RecordView) -> dict[str, Any]:
    return view.event(0, 99, "Ledger Alarm", status_id=2, status_detail=view.body["problem"])


#: One mapper per record kind; a kind the mapping does not know is a Base Event "Other".
MAPPERS: dict[str, Mapper] = {
    "session.intent": _intent,
    "session.result": _result,
    "policy.refused": _refused,
    "review.requested": _review(99, "Request Privileges"),
    "review.decided": _decided,
    "review.executed": _review(99, "Use Privileges", status_id=1),
    "credential.issued": _credential(1, "Create"),
    "credential.revoked": _credential(6, "Delete"),
    "checkpoint": _checkpoint,
    "gateway.settings_changed": _settings_changed,
    "gateway.key": _key_certified,
    "ledger.alarm": _alarm,
}


def to_ocsf(view: RecordView) -> dict[str, Any]:
    """The OCSF event of one record, in the shape of ``ocsf.OcsfEvent``.

    A record the mapping cannot read (a kind added later, a field it lacks) is still
    delivered, as a Base Event "Other" carrying its body: the chain already vouched for it,
    and a SIEM that misses a record is worse than one that gets it unclassified."""
    mapper = MAPPERS.get(view.body.get("kind", ""))
    if mapper is not None:
        try:
            return mapper(view)
        except (KeyError, TypeError, ValueError):
            pass
    return other(view)


def other(view: RecordView) -> dict[str, Any]:
    """The Base Event "Other" of a record."""
    return view.event(0, 99, "Other")
