"""Full verification of a ledger: chain, checkpoint signatures, anchor, tail.

One streaming pass, in storage order, over the records' exact canonical bytes (as read from
the gateway's ledger API or from a bundle's ``records.jsonl``). Memory stays bounded: the
verifier keeps the hashes since the last checkpoint, one record of look-ahead and the anchor.

The first failure stops the pass; it names a sequence number and one of these kinds:

- ``content changed``: a record's bytes no longer hash to what the chain recorded for them.
- ``record missing``: a sequence number is absent.
- ``reordered``: a record stands at a place that is not its own, or a checkpoint was replayed.
- ``signature invalid``: a checkpoint's signature does not verify, or a signed head hash no
  longer matches the chain (records were changed and the chain recomputed after them).
- ``tail truncated``: the anchor (or a bundle's manifest) proves records that are absent.
- ``anchor mismatch``: the anchor's copy of a checkpoint differs from the ledger's.
- ``unreadable``: a line is not a ledger record at all.

The pass is split by concern: this module walks the chain; ``verify_checkpoints`` checks the
checkpoint records, ``verify_anchor`` compares them with the anchor, ``verify_signatures``
checks signatures in background threads. ``verification`` holds the result model (re-exported
here: ``Failure``, ``FailureKind``, ``Verification``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from airflow_hoop.ledger.anchor import AnchorEntry
from airflow_hoop.ledger.chain import GENESIS_HASH, StoredRecord
from airflow_hoop.ledger.checkpoint import PublicKeySet
from airflow_hoop.ledger.verification import Failure, FailureKind, Verification
from airflow_hoop.ledger.verify_batches import BatchChecks
from airflow_hoop.ledger.verify_checkpoints import CheckpointChecks
from airflow_hoop.ledger.verify_signatures import SignatureChecks

__all__ = [
    "MAX_PENDING_HASHES",
    "Failure",
    "FailureKind",
    "LedgerVerifier",
    "Verification",
    "verify_chain",
    "verify_lines",
]

#: Hashes kept for checkpoints that sign a head this far behind their own record (at most).
MAX_PENDING_HASHES = 500_000


class _Kind(msgspec.Struct):
    kind: str | None = None


class _Head(msgspec.Struct):
    """All the chain check needs of a record; the rest is decoded only when asked for."""

    seq: int
    prev_hash: str
    body: _Kind
    # Compared with a bundle's claimed window (bundle_window.py). Any JSON: a record whose
    # time is not a string is judged by its hash (content changed), not as unreadable.
    time: Any = None


_HEAD = msgspec.json.Decoder(_Head)
_ANY = msgspec.json.Decoder()


class _Pending:
    """A decision that needs the next record: reordered or missing; which record changed."""

    __slots__ = ("hash", "kind", "seq")

    def __init__(self, kind: str, seq: int, hash_: str | None = None) -> None:
        self.kind = kind
        self.seq = seq
        self.hash = hash_


class LedgerVerifier(BatchChecks, CheckpointChecks):
    """Push the records in storage order with ``feed``; ``finish`` gives the result.

    ``start_seq``/``start_hash`` say where the records begin (a bundle starts after a signed
    checkpoint: ``prev_checkpoint`` is that checkpoint's body). ``anchor`` holds the anchor's
    entries; ``complete`` says the records run to the ledger's end, so checkpoints the anchor
    holds beyond them mean a truncated tail (False for a bundle, which is a window).
    ``certificates`` are gateway key certificates issued before the records (a bundle's
    ``keys.jsonl``); those among the records are read as they come. Every record must be
    under a batch signature (``feed``'s ``batch``) unless ``chain_only``.
    """

    def __init__(
        self,
        keys: PublicKeySet | None,
        *,
        start_seq: int = 1,
        start_hash: str = GENESIS_HASH,
        prev_checkpoint: dict[str, Any] | None = None,
        anchor: Iterable[AnchorEntry] | None = None,
        anchor_location: str | None = None,
        complete: bool = True,
        chain_only: bool = False,
        on_checkpoint: Callable[[int, dict[str, Any]], str | None] | None = None,
        certificates: Iterable[dict[str, Any]] | None = None,
    ) -> None:
        self.keys = keys
        self.start_seq = start_seq
        self.start_hash = start_hash
        self.expected = start_seq
        self.prev_hex = start_hash
        self._prev_raw = bytes.fromhex(start_hash)
        self._count = 0  # counted here, not in the pydantic result, while streaming
        self._first: int | None = None  # (attribute sets on a model cost microseconds)
        self._last: int | None = None
        self._data: bytes | None = None
        self._record: dict[str, Any] | None = None
        #: Seq and body kind of the record the last ``feed`` accepted (None when it did not).
        self.last_accepted: int | None = None
        self.last_kind: str | None = None
        #: The time the last accepted record states (ISO 8601 as written; any JSON value).
        self.last_time: Any = None
        self.complete = complete
        self.chain_only = chain_only
        self.on_checkpoint = on_checkpoint
        self.result = Verification(ok=True, anchor=anchor_location)
        self._hashes: dict[int, str] = {}
        self._pending: _Pending | None = None
        self._anchor: dict[int, AnchorEntry] | None = None
        if anchor is not None:
            self._anchor = {e.number: e for e in anchor}
        self._anchor_max = max(self._anchor, default=0) if self._anchor else 0
        self._last_statement: dict[str, Any] | None = None
        self._start_body: bytes | None = None
        self._signatures = SignatureChecks()
        self._last_number = 0
        if prev_checkpoint is not None:
            self._start_checkpoint(prev_checkpoint)
        self._init_batches(keys, certificates)

    # -- feeding -----------------------------------------------------------------------------
    @property
    def failed(self) -> bool:
        return self.result.failure is not None

    def fail(
        self, kind: FailureKind, seq: int | None, message: str, file: str | None = None
    ) -> Failure:
        """Record the first failure (later ones are consequences and are dropped); a bad
        signature checked in the background at an earlier seq takes precedence (at the same
        seq this failure is the more precise one: a changed record also breaks its batch)."""
        if self.result.failure is None:
            self._settle_signatures(upto=seq, only_done=False, before_batches=True)
        if self.result.failure is None:
            self._sync()
            self.result.ok = False
            self.result.failure = Failure(kind=kind, seq=seq, message=message, file=file)
        assert self.result.failure is not None
        return self.result.failure

    @property
    def last_checkpoint_number(self) -> int:
        """The last checkpoint read (the window's start checkpoint included); 0 for none."""
        return self._last_number

    def anchor_entries(self) -> list[AnchorEntry] | None:
        """The anchor's entries given to the verifier (None without an anchor)."""
        return None if self._anchor is None else list(self._anchor.values())

    @property
    def record(self) -> dict[str, Any] | None:
        """The record the last ``feed`` accepted, parsed (on first use)."""
        if self._record is None and self._data is not None:
            self._record = _ANY.decode(self._data)
        return self._record

    def _sync(self) -> None:
        result = self.result
        result.records, result.first_seq, result.last_seq = self._count, self._first, self._last

    def feed(
        self,
        data: bytes,
        stored_hash: str | None = None,
        storage_seq: int | None = None,
        batch: str | None = None,
    ) -> Failure | None:
        """Check one record (its exact bytes) and, when it ends a batch, the batch's signature
        (``batch``); returns the failure once there is one."""
        self._data = self._record = self.last_accepted = self.last_kind = self.last_time = None
        if self.result.failure is not None:
            return self.result.failure
        try:
            head = _HEAD.decode(data)
        except msgspec.DecodeError:
            return self.fail(
                FailureKind.UNREADABLE, self.expected, "the line is not a ledger record"
            )
        seq, prev_hash = head.seq, head.prev_hash
        raw = hashlib.sha256(self._prev_raw + data).digest()
        digest = raw.hex()
        if self._pending is not None and self._resolve(seq, prev_hash):
            return self.result.failure
        if storage_seq is not None and storage_seq != seq:
            return self.fail(
                FailureKind.REORDERED,
                storage_seq,
                f"the record stored at seq {storage_seq} says it is seq {seq}",
            )
        if seq != self.expected:
            if seq > self.expected:
                self._pending = _Pending("gap", self.expected)
                self.expected = seq  # keep reading: the next record decides
                return None
            return self.fail(
                FailureKind.REORDERED, seq, f"seq {seq} appears after seq {self.expected - 1}"
            )
        if prev_hash != self.prev_hex:
            if stored_hash is not None:
                # The previous record matched its stored hash: this link was changed.
                return self.fail(
                    FailureKind.CONTENT_CHANGED,
                    seq,
                    "chain broken: prev_hash does not match the previous record's hash "
                    "(a record before it was changed and its hash recomputed)",
                )
            if seq == self.start_seq:
                return self.fail(
                    FailureKind.CONTENT_CHANGED,
                    seq,
                    "chain broken: prev_hash does not match the signed hash before the records",
                )
            # Which record changed, the previous one or this link? If this record is intact,
            # its hash over the prev_hash it states is what the next record links to.
            try:
                claimed = hashlib.sha256(bytes.fromhex(prev_hash) + data).hexdigest()
            except ValueError:
                return self.fail(FailureKind.CONTENT_CHANGED, seq, "prev_hash is not a hash")
            self._pending = _Pending("link", seq, claimed)
        if stored_hash is not None and stored_hash != digest:
            return self.fail(
                FailureKind.CONTENT_CHANGED, seq, "content changed: hash does not match the record"
            )
        self._accept(seq, raw, digest, data, head.body.kind)
        self.last_time = head.time
        if batch is not None and not self.chain_only and self.result.failure is None:
            self._batch_end(seq, batch, digest, head.time)
        return self.result.failure

    def _resolve(self, seq: int, prev_hash: str) -> bool:
        """Settle the pending decision with the next record; True when it is a failure."""
        pending, self._pending = self._pending, None
        assert pending is not None
        if pending.kind == "gap":
            if seq == pending.seq:
                self.fail(FailureKind.REORDERED, seq, f"seq {seq} appears after a later record")
            else:
                self.fail(
                    FailureKind.RECORD_MISSING, pending.seq, f"record missing: seq {pending.seq}"
                )
            return True
        # "link": record pending.seq did not link to its predecessor.
        if prev_hash == pending.hash:
            self.fail(
                FailureKind.CONTENT_CHANGED,
                pending.seq - 1,
                f"content changed: the record no longer hashes to the prev_hash that seq "
                f"{pending.seq} recorded",
            )
        else:
            self.fail(
                FailureKind.CONTENT_CHANGED,
                pending.seq,
                "content changed: the record's prev_hash or content was changed",
            )
        return True

    def _accept(self, seq: int, raw: bytes, digest: str, data: bytes, kind: str | None) -> None:
        if self._first is None:
            self._first = seq
        self._count += 1
        self._last = self.last_accepted = seq
        self.last_kind = kind
        self._prev_raw, self.prev_hex = raw, digest
        self.expected = seq + 1
        self._data = data
        if len(self._hashes) < MAX_PENDING_HASHES:
            self._hashes[seq] = digest
        # With a link pending, the next record decides the failure; skip the checkpoint.
        if kind == "checkpoint" and self._pending is None and not self.chain_only:
            try:
                record = self.record
            except (msgspec.DecodeError, UnicodeDecodeError):
                # The head decode skips unknown fields unchecked: invalid UTF-8 there shows
                # only now (found by tests/unit/test_fuzz_bundle.py).
                self.fail(FailureKind.UNREADABLE, seq, "the checkpoint record is not valid JSON")
                return
            assert record is not None
            self._checkpoint(seq, record["body"])  # an object: the head decode checked it
        elif kind == "gateway.key" and self._pending is None and not self.chain_only:
            try:
                record = self.record
            except (msgspec.DecodeError, UnicodeDecodeError):
                self.fail(FailureKind.UNREADABLE, seq, "the key record is not valid JSON")
                return
            assert record is not None
            self._certificate(seq, record["body"])

    # -- the end -----------------------------------------------------------------------------
    def _settle_signatures(
        self, *, upto: int | None, only_done: bool, before_batches: bool = False
    ) -> None:
        """Collect background signature checks in seq order (those with seq <= ``upto``;
        with ``before_batches``, batch checks at ``upto`` itself are left);
        the first invalid one becomes the failure."""
        invalid = self._signatures.first_invalid(
            upto=upto, only_done=only_done, before_batches=before_batches
        )
        if invalid is not None and self.result.failure is None:
            self._sync()
            self.result.ok = False
            kind = FailureKind(invalid[2]) if invalid[2] else FailureKind.SIGNATURE_INVALID
            self.result.failure = Failure(kind=kind, seq=invalid[0], message=invalid[1])

    def finish(self, *, expect_last_seq: int | None = None) -> Verification:
        """Settle what needs no next record; check the anchor's tail and the expected end."""
        result = self.result
        if result.failure is None:
            self._settle_signatures(upto=None, only_done=False)
        self._signatures.close()
        if self._pending is not None and result.failure is None:
            pending, self._pending = self._pending, None
            if pending.kind == "gap":
                self.fail(
                    FailureKind.RECORD_MISSING, pending.seq, f"record missing: seq {pending.seq}"
                )
            else:
                self.fail(
                    FailureKind.CONTENT_CHANGED,
                    pending.seq - 1,
                    f"content changed: the record no longer hashes to the prev_hash that seq "
                    f"{pending.seq} recorded",
                )
        if result.failure is not None:
            return result
        self._sync()
        last = result.last_seq if result.last_seq is not None else self.start_seq - 1
        if not self.chain_only:
            self._uncovered_tail(last)
            self._settle_signatures(upto=None, only_done=False)
            if result.failure is not None:
                return result
        if expect_last_seq is not None and last < expect_last_seq:
            self.fail(
                FailureKind.TAIL_TRUNCATED,
                last + 1,
                f"records {last + 1}..{expect_last_seq} are missing from the end",
            )
            return result
        if self._anchor is not None:
            self._anchor_tail(last)
        if result.failure is None:
            signed = result.last_signed_seq
            result.unsigned_tail = last - signed if signed is not None else result.records
            result.head_hash = self.prev_hex
        return result


def verify_lines(
    lines: Iterable[bytes],
    keys: PublicKeySet | None,
    batches: Iterable[tuple[int, str]] = (),
    **options: Any,
) -> Verification:
    """Verify canonical record lines (a bundle's ``records.jsonl``) in one call, with the
    batch signatures ``(last_seq, batch_sig)`` in seq order."""
    verifier = LedgerVerifier(keys, **options)
    ends = BatchEnds(batches)
    for line in lines:
        if verifier.feed(line.rstrip(b"\n"), batch=ends.at(verifier.expected)) is not None:
            break
    return verifier.finish()


class BatchEnds:
    """Batch signatures ``(last_seq, batch_sig)`` in seq order, handed out by seq (streamed:
    a bundle's ``batches.jsonl`` is read alongside its records)."""

    def __init__(self, batches: Iterable[tuple[int, str]]) -> None:
        self._iter = iter(batches)
        self._next = next(self._iter, None)

    def at(self, seq: int) -> str | None:
        while self._next is not None and self._next[0] < seq:
            self._next = next(self._iter, None)
        if self._next is not None and self._next[0] == seq:
            return self._next[1]
        return None


def verify_chain(
    rows: Iterable[StoredRecord], start_seq: int = 1, start_hash: str = GENESIS_HASH
) -> Verification:
    """Recompute the chain alone (no signatures); the failure names the first record that does
    not verify. Streams: memory does not grow with the number of records."""
    verifier = LedgerVerifier(None, start_seq=start_seq, start_hash=start_hash, chain_only=True)
    for row in rows:
        if verifier.feed(row.body.encode("utf-8"), row.hash, row.seq) is not None:
            break
    return verifier.finish()
