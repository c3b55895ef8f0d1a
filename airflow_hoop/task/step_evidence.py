"""What the gateway answered a step's statements: its database users and ledger seqs.

Kept per step key for the life of the task process (not cleared when the step ends), so the
OpenLineage facet written after the task (``hooks/lineage.py``) can name the records of the
step: the gateway returns each exec's intent and result seqs and the database user it ran as.
A step cannot read the ledger itself (auditor keys only), so this is all it knows of it.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel, Field

from airflow_hoop.ledger.records import StepRef
from airflow_hoop.wire.sessions import CheckpointNote, TypedResult


class StepEvidence(BaseModel):
    """One step's statements as the gateway recorded them (in the order they ran)."""

    step: StepRef
    db_users: list[str] = Field(default_factory=list)
    intent_seqs: list[int] = Field(default_factory=list)
    result_seqs: list[int] = Field(default_factory=list)
    #: What the gateway said of its checkpoints when the step ended (None: not ended, or off).
    checkpoint: CheckpointNote | None = None

    @property
    def last_seq(self) -> int | None:
        """The step's last record this process saw (a checkpoint must cover it)."""
        seqs = self.intent_seqs + self.result_seqs
        return max(seqs) if seqs else None


_lock = threading.Lock()
_evidence: dict[str, StepEvidence] = {}


def note_exec(step: StepRef, result: TypedResult) -> None:
    """Remember one exec's answer (called for every statement the step sends)."""
    with _lock:
        seen = _evidence.get(step.key)
        if seen is None:
            seen = _evidence[step.key] = StepEvidence(step=step)
        if result.db_user and result.db_user not in seen.db_users:
            seen.db_users.append(result.db_user)
        if result.intent_seq is not None:
            seen.intent_seqs.append(result.intent_seq)
        if result.result_seq is not None:
            seen.result_seqs.append(result.result_seq)


def note_end(step: StepRef, checkpoint: CheckpointNote | None) -> None:
    """Remember the gateway's checkpoint state at the step's end (for the lineage facet)."""
    with _lock:
        seen = _evidence.get(step.key)
        if seen is not None:  # a step that sent nothing has no records to cover
            seen.checkpoint = checkpoint


def evidence_for(step: StepRef) -> StepEvidence | None:
    """A copy of what this process saw of ``step`` (None: it sent nothing through a gateway)."""
    with _lock:
        seen = _evidence.get(step.key)
        return None if seen is None else seen.model_copy(deep=True)
