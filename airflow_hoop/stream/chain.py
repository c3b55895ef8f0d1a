"""The chain check of the stream: a record is delivered only if it links to the one before.

Per record: its seq follows the last one, its ``prev_hash`` is the last hash, and the SHA-256
of the last hash and its stored bytes is the hash the ledger gave it. A checkpoint record's
signed head is compared with the hash the stream saw at that seq (when it saw it), so a chain
recomputed after a changed record is caught at the next checkpoint. With the pinned public
key the checkpoint's signature is verified too (so a checkpoint forged to match a recomputed
chain is caught); the stream never delivers a record whose link it could not check.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from airflow_hoop.errors import ChainBrokenError
from airflow_hoop.ledger.chain import link_hash
from airflow_hoop.ledger.checkpoint import PublicKeySet, signature_valid
from airflow_hoop.stream.cursor import Cursor
from airflow_hoop.stream.ocsf import CheckpointRef

_DECODE = msgspec.json.Decoder().decode
#: Hashes kept to compare with checkpoints' signed heads (older ones are not compared).
MAX_HASHES = 200_000


class RawRecord(Protocol):
    """One record as read from the ledger: its seq, its hash, its exact stored bytes."""

    @property
    def seq(self) -> int: ...
    @property
    def hash(self) -> str: ...
    @property
    def data(self) -> bytes: ...


class ChainFollower:
    """Checks each record against the last one; starts from a cursor."""

    def __init__(self, cursor: Cursor, keys: PublicKeySet | None = None) -> None:
        #: with the pinned key, every checkpoint's signature is verified too
        self.keys = keys
        self.seq = cursor.seq
        self.hash = cursor.hash
        self._start = cursor.seq
        self._hashes: dict[int, str] = {cursor.seq: cursor.hash}
        self.last_checkpoint: CheckpointRef | None = None

    def check(self, raw: RawRecord) -> dict[str, Any]:
        """The record parsed, once it links; ChainBrokenError naming its seq otherwise."""
        if raw.seq != self.seq + 1:
            what = "is missing" if raw.seq > self.seq + 1 else "came again or out of order"
            seq = self.seq + 1 if raw.seq > self.seq + 1 else raw.seq
            raise ChainBrokenError(seq, f"{what} (the stream was at {self.seq})")
        try:
            record = _DECODE(raw.data)
            prev = record["prev_hash"]
            body = record["body"]
        except (msgspec.DecodeError, KeyError, TypeError):
            raise ChainBrokenError(raw.seq, "is not a ledger record") from None
        if prev != self.hash:
            where = "the cursor's" if raw.seq == self._start + 1 else "the previous record's"
            raise ChainBrokenError(
                raw.seq,
                f"does not link to {where} hash: the ledger was rewritten before it",
            )
        if link_hash(self.hash, raw.data) != raw.hash:
            raise ChainBrokenError(raw.seq, "was changed: its bytes do not hash to its hash")
        if body.get("kind") == "checkpoint":
            self._check_head(raw.seq, body)
        self.seq, self.hash = raw.seq, raw.hash
        self._remember(raw.seq, raw.hash)
        return record  # type: ignore[no-any-return]

    def _check_head(self, seq: int, body: dict[str, Any]) -> None:
        if self.keys is not None and not signature_valid(body, self.keys):
            raise ChainBrokenError(
                seq,
                "is a checkpoint whose signature does not verify with the pinned public key "
                f"({self.keys.key_name})",
            )
        statement = body.get("statement") or {}
        last_seq, head = statement.get("last_seq"), statement.get("head_hash")
        seen = self._hashes.get(last_seq) if isinstance(last_seq, int) else None
        if seen is not None and seen != head:
            raise ChainBrokenError(
                seq,
                f"is a checkpoint whose signed head differs from the chain at {last_seq}: "
                "records were changed and the chain recomputed",
            )
        self.last_checkpoint = CheckpointRef(seq=seq, number=int(statement.get("number", 0)))
        # Only hashes after a signed head matter from now on.
        if isinstance(last_seq, int):
            self._hashes = {s: h for s, h in self._hashes.items() if s > last_seq}

    def _remember(self, seq: int, hash_: str) -> None:
        self._hashes[seq] = hash_
        if len(self._hashes) > MAX_HASHES:
            self._hashes.pop(next(iter(self._hashes)))
