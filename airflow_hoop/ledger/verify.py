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
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import msgspec

from airflow_hoop.ledger.anchor import AnchorEntry
from airflow_hoop.ledger.canonical import canonical
from airflow_hoop.ledger.chain import GENESIS_HASH
from airflow_hoop.ledger.checkpoint import (
    GENESIS_CHECKPOINT,
    PublicKeySet,
    checkpoint_hash,
    signature_valid,
)
from airflow_hoop.ledger.records import Checkpoint
from airflow_hoop.ledger.verification import Failure, FailureKind, Verification

#: Hashes kept for checkpoints that sign a head this far behind their own record (at most).
MAX_PENDING_HASHES = 500_000


class _Kind(msgspec.Struct):
    kind: str | None = None


class _Head(msgspec.Struct):
    """All the chain check needs of a record; the rest is decoded only when asked for."""

    seq: int
    prev_hash: str
    body: _Kind


_HEAD = msgspec.json.Decoder(_Head)
_ANY = msgspec.json.Decoder()


class _Pending:
    """A decision that needs the next record: reordered or missing; which record changed."""

    __slots__ = ("hash", "kind", "seq")

    def __init__(self, kind: str, seq: int, hash_: str | None = None) -> None:
        self.kind = kind
        self.seq = seq
        self.hash = hash_


class LedgerVerifier:
    """Push the records in storage order with ``feed``; ``finish`` gives the result.

    ``start_seq``/``start_hash`` say where the records begin (a bundle starts after a signed
    checkpoint: ``prev_checkpoint`` is that checkpoint's body). ``anchor`` holds the anchor's
    entries; ``complete`` says the records run to the ledger's end, so checkpoints the anchor
    holds beyond them mean a truncated tail (False for a bundle, which is a window).
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
        self._executor: ThreadPoolExecutor | None = None
        self._signatures: deque[tuple[int, str, Future[bool]]] = deque()
        self._last_number = 0
        if prev_checkpoint is not None:
            self._start_checkpoint(prev_checkpoint)

    def _start_checkpoint(self, body: dict[str, Any]) -> None:
        """The checkpoint that signs the hash the records start from (a bundle's window)."""
        seq = self.start_seq
        try:
            statement = Checkpoint.model_validate(body).statement
        except ValueError:
            self.fail(FailureKind.UNREADABLE, seq, "the window's start checkpoint is malformed")
            return
        if self.keys is None or not signature_valid(body, self.keys):
            self.fail(
                FailureKind.SIGNATURE_INVALID,
                seq,
                f"the signature of checkpoint {statement.number}, which signs the hash the "
                "records start from, does not verify",
            )
            return
        if statement.last_seq != seq - 1 or statement.head_hash != self.start_hash:
            self.fail(
                FailureKind.CONTENT_CHANGED,
                seq,
                f"the records do not start where checkpoint {statement.number} ends",
            )
            return
        in_anchor = self._anchor is not None and statement.number in self._anchor
        if in_anchor and not self._anchor_matches(seq, statement.number, body):
            return
        self._last_statement = body["statement"]
        self._last_number = statement.number
        self._start_body = canonical(body)
        self.result.last_signed_seq = statement.last_seq

    # -- feeding -----------------------------------------------------------------------------
    @property
    def failed(self) -> bool:
        return self.result.failure is not None

    def fail(
        self, kind: FailureKind, seq: int | None, message: str, file: str | None = None
    ) -> Failure:
        """Record the first failure (later ones are consequences and are dropped); a bad
        signature checked in the background at an earlier seq takes precedence."""
        if self.result.failure is None:
            self._settle_signatures(upto=seq, only_done=False)
        if self.result.failure is None:
            self._sync()
            self.result.ok = False
            self.result.failure = Failure(kind=kind, seq=seq, message=message, file=file)
        assert self.result.failure is not None
        return self.result.failure

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
        self, data: bytes, stored_hash: str | None = None, storage_seq: int | None = None
    ) -> Failure | None:
        """Check one record (its exact bytes); returns the failure once there is one."""
        self._data = self._record = self.last_accepted = self.last_kind = None
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
            record = self.record
            assert record is not None
            self._checkpoint(seq, record["body"])

    # -- checkpoints -------------------------------------------------------------------------
    def _checkpoint(self, seq: int, body: dict[str, Any]) -> None:
        if self.keys is None:
            self.fail(FailureKind.SIGNATURE_INVALID, seq, "no public key to verify checkpoints")
            return
        try:
            checkpoint = Checkpoint.model_validate(body)
        except ValueError:
            self.fail(FailureKind.UNREADABLE, seq, "the checkpoint record is malformed")
            return
        statement = body["statement"]
        st = checkpoint.statement
        # Ed25519 releases the GIL: signatures are checked in threads while the chain goes on;
        # a bad one is reported at its own seq (see _settle_signatures).
        message = (
            f"checkpoint {st.number}: the signature does not verify against "
            f"{self.keys.key_name} v{checkpoint.key_version}"
        )
        self._signatures.append(
            (seq, message, self._pool().submit(signature_valid, body, self.keys))
        )
        if len(self._signatures) > 64:
            self._settle_signatures(upto=None, only_done=True)
        if self._start_body is not None and st.number == self._last_number:
            # The start checkpoint's own record (it lies after the hash it signs).
            if canonical(body) != self._start_body:
                self.fail(FailureKind.REORDERED, seq, f"checkpoint {st.number} appears twice")
            return
        if not self._follows(seq, st.number, st.first_seq, st.prev_checkpoint):
            return
        if not st.first_seq - 1 <= st.last_seq < seq:
            self.fail(FailureKind.REORDERED, seq, f"checkpoint {st.number} covers an odd range")
            return
        signed = self._hash_at(st.last_seq)
        if signed is None:
            self.result.warnings.append(
                f"checkpoint {st.number} signs seq {st.last_seq}, outside the records read"
            )
        elif signed != st.head_hash:
            self.fail(
                FailureKind.SIGNATURE_INVALID,
                st.first_seq,
                f"checkpoint {st.number} (seq {seq}) signed head {st.head_hash[:16]}… for seq "
                f"{st.last_seq}; records {st.first_seq}..{st.last_seq} now hash to "
                f"{signed[:16]}…: one of them was changed and the chain recomputed",
            )
            return
        if self._anchor is not None and not self._anchor_matches(seq, st.number, body):
            return
        problem = None if self.on_checkpoint is None else self.on_checkpoint(seq, body)
        if problem is not None:
            self.fail(FailureKind.CONTENT_CHANGED, seq, problem)
            return
        self._last_statement, self._last_number = statement, st.number
        self.result.checkpoints += 1
        self.result.last_checkpoint = st.number
        self.result.last_signed_seq = st.last_seq
        for old in [s for s in self._hashes if s <= st.last_seq]:
            del self._hashes[old]

    def _follows(self, seq: int, number: int, first_seq: int, prev: str) -> bool:
        """Checkpoints form a chain: number + 1, prev hash, adjoining ranges."""
        if self._last_statement is None:
            if self.start_seq == 1 and (
                number != 1 or prev != GENESIS_CHECKPOINT or first_seq != 1
            ):
                self.fail(
                    FailureKind.RECORD_MISSING,
                    seq,
                    f"checkpoint {number} is the first in the ledger; checkpoints before it are "
                    "missing",
                )
                return False
            return True
        last = self._last_statement
        if (
            number != self._last_number + 1
            or prev != checkpoint_hash(last)
            or first_seq != int(last["last_seq"]) + 1
        ):
            self.fail(
                FailureKind.REORDERED,
                seq,
                f"checkpoint {number} does not follow checkpoint {self._last_number}: "
                "checkpoints were replayed, reordered or removed",
            )
            return False
        return True

    def _hash_at(self, seq: int) -> str | None:
        if seq == self.start_seq - 1:
            return self.start_hash
        return self._hashes.get(seq)

    def _anchor_matches(self, seq: int, number: int, body: dict[str, Any]) -> bool:
        assert self._anchor is not None
        entry = self._anchor.get(number)
        if entry is None:
            if number <= self._anchor_max:
                self.fail(
                    FailureKind.ANCHOR_MISMATCH,
                    seq,
                    f"the anchor lacks checkpoint {number} (it holds later ones)",
                )
                return False
            return True  # the anchor lags; reported in finish()
        ours = Checkpoint.model_validate(body)
        theirs = entry.checkpoint()
        if theirs is None or theirs != ours:
            self.fail(
                FailureKind.ANCHOR_MISMATCH,
                seq,
                f"checkpoint {number} differs from the anchor's copy ({entry.name})",
                file=entry.name,
            )
            return False
        self.result.anchor_matched += 1
        return True

    # -- the end -----------------------------------------------------------------------------
    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ed25519")
        return self._executor

    def _settle_signatures(self, *, upto: int | None, only_done: bool) -> None:
        """Collect background signature checks in seq order (those with seq <= ``upto``);
        the first invalid one becomes the failure."""
        while self._signatures:
            seq, message, future = self._signatures[0]
            if (upto is not None and seq > upto) or (only_done and not future.done()):
                return
            self._signatures.popleft()
            if not future.result() and self.result.failure is None:
                self._sync()
                self.result.ok = False
                self.result.failure = Failure(
                    kind=FailureKind.SIGNATURE_INVALID, seq=seq, message=message
                )
                self._signatures.clear()

    def finish(self, *, expect_last_seq: int | None = None) -> Verification:
        """Settle what needs no next record; check the anchor's tail and the expected end."""
        result = self.result
        if result.failure is None:
            self._settle_signatures(upto=None, only_done=False)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
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

    def _anchor_tail(self, last: int) -> None:
        assert self._anchor is not None
        beyond = sorted(n for n in self._anchor if n > self._last_number)
        if not beyond:
            if self._last_number > self._anchor_max:
                self.result.warnings.append(
                    f"the anchor lags: it lacks checkpoints {self._anchor_max + 1}.."
                    f"{self._last_number} (the gateway writes them after the ledger; check its log)"
                )
            return
        if not self.complete:
            return  # a window: later checkpoints belong to records after it
        for number in beyond:
            entry = self._anchor[number]
            checkpoint = entry.checkpoint()
            body = None if checkpoint is None else checkpoint.model_dump(mode="json")
            if body is None or self.keys is None or not signature_valid(body, self.keys):
                self.fail(
                    FailureKind.ANCHOR_MISMATCH,
                    None,
                    f"the anchor's {entry.name} is not a validly signed checkpoint",
                    file=entry.name,
                )
                return
        newest = self._anchor[beyond[-1]].checkpoint()
        assert newest is not None
        st = newest.statement
        self.fail(
            FailureKind.TAIL_TRUNCATED,
            last + 1,
            f"the ledger ends at seq {last}, but the anchor holds checkpoint {st.number} "
            f"signed at {st.time.isoformat()} covering up to seq {st.last_seq}: records from "
            f"seq {last + 1} on were removed",
        )


def verify_lines(
    lines: Iterable[bytes],
    keys: PublicKeySet | None,
    **options: Any,
) -> Verification:
    """Verify canonical record lines (a bundle's ``records.jsonl``) in one call."""
    verifier = LedgerVerifier(keys, **options)
    for line in lines:
        if verifier.feed(line.rstrip(b"\n")) is not None:
            break
    return verifier.finish()
