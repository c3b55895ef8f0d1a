"""The batch signatures' side of verification: every record under a certified gateway key.

Batches are contiguous: each batch signature must start right after the previous one ends
(a record between two batches, or before the first, is covered by none), its key must be
certified by Vault's checkpoint key (a ``gateway.key`` record read earlier, or one the bundle
carries) and valid at the batch's time, and its signature must verify over the chain hash
at the batch's end. Ed25519 checks run in the background threads of ``verify_signatures``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from airflow_hoop.ledger.batch import (
    NOT_SIGNED,
    CertifiedKey,
    CertifiedKeys,
    bad_signature,
    parse_batch_sig,
    parse_time,
)
from airflow_hoop.ledger.checkpoint import PublicKeySet
from airflow_hoop.ledger.verification import Failure, FailureKind
from airflow_hoop.ledger.verify_signatures import SignatureChecks

#: Batch ends kept for the next checkpoint's count (a ledger without checkpoints: the oldest
#: are dropped, and that checkpoint's count then fails: bounded memory first).
MAX_UNCOUNTED = 1_000_000


class BatchChecks:
    """Mixin of ``LedgerVerifier``: batch signatures (state declared here, set there)."""

    _signatures: SignatureChecks
    start_seq: int

    def fail(
        self, kind: FailureKind, seq: int | None, message: str, file: str | None = None
    ) -> Failure:
        raise NotImplementedError  # LedgerVerifier.fail

    def _settle_signatures(
        self, *, upto: int | None, only_done: bool, before_batches: bool = False
    ) -> None:
        raise NotImplementedError  # LedgerVerifier._settle_signatures

    def _init_batches(
        self, keys: PublicKeySet | None, certificates: Iterable[dict[str, Any]] | None
    ) -> None:
        self.certified = CertifiedKeys(keys)
        #: Last seq under a batch signature (records after it are not covered yet).
        self.covered = self.start_seq - 1
        #: Ends of the batches not yet counted by a checkpoint (``checkpoint_batches``).
        self._ends: deque[int] = deque(maxlen=MAX_UNCOUNTED)
        for body in certificates or ():
            problem = self.certified.add(body)
            if problem is not None:
                self.fail(FailureKind.SIGNATURE_INVALID, None, problem, file="keys.jsonl")
                return

    def _certificate(self, seq: int, body: dict[str, Any]) -> None:
        """A ``gateway.key`` record: its certificate must verify against Vault's key."""
        problem = self.certified.add(body)
        if problem is not None:
            self.fail(FailureKind.SIGNATURE_INVALID, seq, problem)

    def _batch_end(self, seq: int, text: str, digest: str, time: Any) -> None:
        """The record at ``seq`` (chain hash ``digest``) ends a batch signed by ``text``."""
        sig = parse_batch_sig(text)
        first = self.covered + 1
        if sig is None:
            self.fail(
                FailureKind.NOT_SIGNED, first, f"{NOT_SIGNED}: the batch signature is malformed"
            )
            return
        if sig.first_seq != first:
            where = (
                f"no batch signature covers seq {first}..{sig.first_seq - 1}"
                if sig.first_seq > first
                else f"the batch signature at seq {seq} claims to start at seq {sig.first_seq}, "
                f"inside a batch already signed (a signed batch replayed at another place)"
            )
            self.fail(FailureKind.NOT_SIGNED, first, f"{NOT_SIGNED}: {where}")
            return
        problem = self.certified.precheck(sig, seq, parse_time(time))
        if problem is not None:
            self.fail(FailureKind.NOT_SIGNED, first, f"{NOT_SIGNED}: {problem}")
            return
        key = self.certified.get(sig.key_id)
        assert key is not None
        self._signatures.submit_check(
            first,
            f"{NOT_SIGNED}: {bad_signature(sig, seq)}",
            CertifiedKey.verifies,
            key,
            sig,
            seq,
            digest,
            kind=FailureKind.NOT_SIGNED.value,
        )
        if self._signatures.crowded:
            self._settle_signatures(upto=None, only_done=True)
        self.covered = seq
        self._ends.append(seq)

    def checkpoint_batches(self, seq: int, statement: dict[str, Any]) -> bool:
        """A checkpoint states how many batches end in its range and whether its signer found
        a record under none: both must agree with what was read. False on failure."""
        first, last = int(statement["first_seq"]), int(statement["last_seq"])
        counted = 0
        while self._ends and self._ends[0] <= last:
            counted += self._ends.popleft() >= first
        unsigned = statement.get("unsigned_from")
        if unsigned is not None:
            self.fail(
                FailureKind.NOT_SIGNED,
                int(unsigned),
                f"{NOT_SIGNED}: the gateway's checkpoint {statement['number']} (seq {seq}) found "
                "this record under no valid batch signature",
            )
            return False
        if self.covered < last and first >= self.start_seq:
            self.fail(
                FailureKind.NOT_SIGNED,
                self.covered + 1,
                f"{NOT_SIGNED}: no batch signature covers seq {self.covered + 1}..{last}, "
                f"which checkpoint {statement['number']} (seq {seq}) signs",
            )
            return False
        stated = statement.get("batches")
        if stated is not None and stated != counted and first >= self.start_seq:
            self.fail(
                FailureKind.NOT_SIGNED,
                first,
                f"checkpoint {statement['number']} (seq {seq}) signed {stated} batch signatures "
                f"for seq {first}..{last}; the records hold {counted}",
            )
            return False
        return True

    def _uncovered_tail(self, last: int) -> None:
        if self.covered < last:
            self.fail(
                FailureKind.NOT_SIGNED,
                self.covered + 1,
                f"{NOT_SIGNED}: no batch signature covers seq {self.covered + 1}..{last}",
            )
