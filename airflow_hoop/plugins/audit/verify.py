"""The verification badge: are these records in the chain, under a valid signed checkpoint?

The records from the signed checkpoint before ``first_seq`` to the first checkpoint that
covers ``last_seq`` are streamed from the gateway and checked with the ledger's own verifier
(hash links, checkpoint signatures), exactly as ``airflow-hoop audit export`` starts and ends
a bundle. The public key is the one the gateway reads from Vault; a reviewer who trusts
neither pins the key with ``airflow-hoop audit verify --public-key``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from airflow_hoop.client.audit import AuditClient
from airflow_hoop.ledger.verify import LedgerVerifier

#: Beyond this many records to read, the badge points to the CLI instead of verifying.
MAX_SPAN = 250_000


class Badge(BaseModel):
    """What the badge says; ``state`` picks its colour."""

    state: Literal["verified", "unsigned", "failed", "skipped"]
    text: str
    failed_seq: int | None = None


def verify_span(client: AuditClient, first_seq: int, last_seq: int) -> Badge:
    """Verify the chain around ``first_seq..last_seq`` and say how it is covered."""
    start_seq, start_hash, start_body = client.signed_start(first_seq)
    end_seq = client.covering_checkpoint(last_seq)
    # Not yet checkpointed: read to the head (a batch's end, so every record is under its
    # batch signature).
    through = end_seq if end_seq is not None else None
    span = (through if through is not None else last_seq) - start_seq + 1
    if span > MAX_SPAN:
        return Badge(
            state="skipped",
            text=f"not checked here: {span} records to read; run airflow-hoop audit verify",
        )
    verifier = LedgerVerifier(
        client.public_key(),
        start_seq=start_seq,
        start_hash=start_hash,
        prev_checkpoint=start_body,
        complete=False,
        certificates=client.certificates(),
    )
    for record in client.stream(start_seq - 1, through):
        if verifier.feed(record.data, record.hash, record.seq, record.batch) is not None:
            break
    result = verifier.finish(expect_last_seq=through if through is not None else last_seq)
    if result.failure is not None:
        where = result.failure.seq
        return Badge(
            state="failed",
            text=f"verification failed at sequence {where}: {result.failure.kind.value}"
            if where is not None
            else f"verification failed: {result.failure.message}",
            failed_seq=where,
        )
    if end_seq is None:
        return Badge(
            state="unsigned",
            text=f"in the chain (seq {first_seq}..{last_seq}), not yet checkpointed",
        )
    number = result.last_checkpoint
    return Badge(
        state="verified",
        text=f"verified: seq {first_seq}..{last_seq} in the chain, "
        f"covered by signed checkpoint {number}",
    )
