"""The hash chain and its verification."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from pydantic import BaseModel, ValidationError

from airflow_hoop.ledger.canonical import canonical
from airflow_hoop.ledger.records import LedgerRecord

GENESIS_HASH = "00" * 32


def link_hash(prev_hash_hex: str, body: bytes) -> str:
    """``SHA-256(prev_hash || canonical(record))`` as hex."""
    return hashlib.sha256(bytes.fromhex(prev_hash_hex) + body).hexdigest()


class StoredRecord(BaseModel):
    """A record as read back from a store: its exact canonical text and its claimed hash."""

    seq: int
    body: str
    hash: str


class VerifyFailure(BaseModel):
    seq: int
    problem: str


class VerifyReport(BaseModel):
    ok: bool
    records: int
    head_seq: int | None = None
    head_hash: str | None = None
    failure: VerifyFailure | None = None

    def summary(self) -> str:
        if self.ok:
            return f"OK: {self.records} records, chain intact up to seq {self.head_seq}"
        assert self.failure is not None
        return f"FAILED at seq {self.failure.seq}: {self.failure.problem}"


def verify_chain(
    rows: Iterable[StoredRecord], start_seq: int = 1, start_hash: str = GENESIS_HASH
) -> VerifyReport:
    """Recompute the chain; report the first record that does not verify and why.

    Streams: memory does not grow with the number of records.
    """
    expected_seq, prev = start_seq, start_hash
    count = 0
    for row in rows:
        fail = _check(row, expected_seq, prev)
        if fail:
            return VerifyReport(
                ok=False,
                records=count,
                failure=VerifyFailure(
                    seq=row.seq if row.seq == expected_seq else expected_seq, problem=fail
                ),
            )
        prev, expected_seq, count = row.hash, expected_seq + 1, count + 1
    return VerifyReport(
        ok=True, records=count, head_seq=expected_seq - 1 if count else None, head_hash=prev
    )


def _check(row: StoredRecord, expected_seq: int, prev: str) -> str | None:
    if row.seq != expected_seq:
        if row.seq > expected_seq:
            return f"record missing: expected seq {expected_seq}, found {row.seq}"
        return f"reordered or duplicated: seq {row.seq} after {expected_seq - 1}"
    try:
        parsed = json.loads(row.body)
        record = LedgerRecord.model_validate(parsed)
    except (ValueError, ValidationError) as exc:
        return f"content unreadable: {type(exc).__name__}"
    if canonical(parsed) != row.body.encode("utf-8"):
        return "content changed: the record is not in canonical form"
    if record.seq != row.seq:
        return f"content changed: the record says seq {record.seq}"
    if record.prev_hash != prev:
        return "chain broken: prev_hash does not match the previous record's hash"
    if link_hash(prev, row.body.encode("utf-8")) != row.hash:
        return "content changed: hash does not match the record"
    return None
