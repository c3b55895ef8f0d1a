"""The checkpoints' side of verification: signatures, their chain, and the heads they sign.

Checkpoints form a chain of their own (number + 1, hash of the previous statement, adjoining
ranges); each signs the chain's head hash at its ``last_seq``, which must still be the hash the
records give. The window a bundle holds starts at a signed checkpoint (``_start_checkpoint``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_hoop.ledger.canonical import canonical
from airflow_hoop.ledger.checkpoint import GENESIS_CHECKPOINT, checkpoint_hash, signature_valid
from airflow_hoop.ledger.records import Checkpoint
from airflow_hoop.ledger.verification import FailureKind
from airflow_hoop.ledger.verify_anchor import AnchorChecks
from airflow_hoop.ledger.verify_signatures import SignatureChecks


class CheckpointChecks(AnchorChecks):
    """Mixin of ``LedgerVerifier``: checkpoint records (state declared here, set there)."""

    start_seq: int
    start_hash: str
    on_checkpoint: Callable[[int, dict[str, Any]], str | None] | None
    _hashes: dict[int, str]
    _last_statement: dict[str, Any] | None
    _start_body: bytes | None
    _signatures: SignatureChecks

    def checkpoint_batches(self, seq: int, statement: dict[str, Any]) -> bool:
        raise NotImplementedError  # BatchChecks.checkpoint_batches

    def _settle_signatures(
        self, *, upto: int | None, only_done: bool, before_batches: bool = False
    ) -> None:
        raise NotImplementedError  # LedgerVerifier._settle_signatures

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
        self._signatures.submit(seq, message, body, self.keys)
        if self._signatures.crowded:
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
        if not self.checkpoint_batches(seq, statement):
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
