"""The hash chain: the link hash and a record as stored.

Verifying a chain is ``verify.verify_chain`` (built on the full verifier).
"""

from __future__ import annotations

import hashlib

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
    #: The batch signature when the record ends a batch (``ledger/batch.py``).
    batch: str | None = None
