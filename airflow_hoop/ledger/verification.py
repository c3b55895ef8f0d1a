"""What a verification found: the failure kinds, the first failure, the summary.

Kept apart from ``verify.py`` (the checking) so that bundles and reports can carry a result
without the verifier.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field


class FailureKind(str, Enum):
    CONTENT_CHANGED = "content changed"
    RECORD_MISSING = "record missing"
    REORDERED = "reordered"
    SIGNATURE_INVALID = "signature invalid"
    TAIL_TRUNCATED = "tail truncated"
    ANCHOR_MISMATCH = "anchor mismatch"
    UNREADABLE = "unreadable"
    NOT_SIGNED = "record not signed"
    INCOMPLETE = "bundle incomplete"
    REPORT_CHANGED = "report changed"


class Failure(BaseModel):
    """The first thing that does not verify."""

    kind: FailureKind
    seq: int | None = Field(description="first failing sequence; None for a file-level failure")
    message: str
    file: str | None = None

    def describe(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else (self.file or "bundle")
        return f"FAILED at {where}: {self.kind.value}: {self.message}"


class Verification(BaseModel):
    """What a verification pass established."""

    ok: bool
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_hash: str | None = None
    checkpoints: int = 0
    last_checkpoint: int | None = Field(None, description="number of the last checkpoint seen")
    last_signed_seq: int | None = Field(None, description="last seq covered by a signature")
    unsigned_tail: int = Field(0, description="records after the last signed one")
    anchor: str | None = None
    anchor_matched: int = 0
    warnings: list[str] = Field(default_factory=list)
    failure: Failure | None = None

    def summary(self) -> str:
        if self.failure is not None:
            return self.failure.describe()
        span = f"seq {self.first_seq}..{self.last_seq}" if self.records else "no records"
        text = (
            f"OK: {self.records} records ({span}), chain intact, "
            f"{_n(self.checkpoints, 'checkpoint signature')} valid"
        )
        if self.anchor is not None:
            text += f", {_n(self.anchor_matched, 'checkpoint')} matching the anchor"
        if self.unsigned_tail:
            text += (
                f"; {_n(self.unsigned_tail, 'record')} after the last checkpoint (not signed yet)"
            )
        return text


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
