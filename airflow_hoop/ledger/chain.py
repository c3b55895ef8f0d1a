"""The hash chain and its verification."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pydantic import BaseModel

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
    kind: str | None = None


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
    """Recompute the chain alone (no signatures); report the first record that does not verify.

    Streams: memory does not grow with the number of records. ``airflow_hoop.ledger.verify``
    adds checkpoint signatures, the anchor and the tail.
    """
    from airflow_hoop.ledger.verify import LedgerVerifier  # it builds on this module

    verifier = LedgerVerifier(None, start_seq=start_seq, start_hash=start_hash, chain_only=True)
    for row in rows:
        if verifier.feed(row.body.encode("utf-8"), row.hash, row.seq) is not None:
            break
    result = verifier.finish()
    if result.failure is not None:
        failure = result.failure
        return VerifyReport(
            ok=False,
            records=result.records,
            failure=VerifyFailure(
                seq=failure.seq if failure.seq is not None else start_seq,
                problem=failure.message,
                kind=failure.kind.value,
            ),
        )
    return VerifyReport(
        ok=True,
        records=result.records,
        head_seq=result.last_seq,
        head_hash=result.head_hash if result.records else start_hash,
    )
