"""The anchor's side of verification: each checkpoint against the anchor's copy, and the tail.

The anchor (an append-only store of checkpoint copies) outlives the ledger's tail: a checkpoint
it holds beyond the last record read proves records were removed from the end.
"""

from __future__ import annotations

from typing import Any

from airflow_hoop.ledger.anchor import AnchorEntry
from airflow_hoop.ledger.checkpoint import PublicKeySet, signature_valid
from airflow_hoop.ledger.records import Checkpoint
from airflow_hoop.ledger.verification import Failure, FailureKind, Verification


class AnchorChecks:
    """Mixin of ``LedgerVerifier``: the anchor comparisons (state declared here, set there)."""

    keys: PublicKeySet | None
    complete: bool
    result: Verification
    _anchor: dict[int, AnchorEntry] | None
    _anchor_max: int
    _last_number: int

    def fail(
        self, kind: FailureKind, seq: int | None, message: str, file: str | None = None
    ) -> Failure:
        raise NotImplementedError  # LedgerVerifier.fail

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
