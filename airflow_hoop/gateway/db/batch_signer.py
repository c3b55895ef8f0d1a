"""This gateway process's batch key: signs each batch it appends, checks heads it did not write.

The private key lives in this process's memory only (made by ``ledger_io/process_key.py``,
certified by Vault). A head this process did not write is checked before anything is chained
after it: its batch signature must verify with a certified key (another replica's, found in
the ledger's ``gateway.key`` records). If not, the batch is refused, the log raises an alarm
and a ``ledger.alarm`` record names the head (``LedgerAppender``), so the forgery is on
record even before ``audit verify`` runs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from airflow_hoop.errors import LedgerError
from airflow_hoop.ledger.batch import (
    NOT_SIGNED,
    CertifiedKeys,
    bad_signature,
    parse_batch_sig,
    sign_batch,
)
from airflow_hoop.ledger.checkpoint import PublicKeySet

log = logging.getLogger(__name__)

#: A head: (seq, hash, batch_sig, time) as ``ledger_lock_head()`` returns it.
Head = tuple[Any, ...]


class ProcessKey:
    """A private key and the id its certificate names."""

    __slots__ = ("key_id", "private")

    def __init__(self, private: Ed25519PrivateKey, key_id: str) -> None:
        self.private, self.key_id = private, key_id


class UnsignedHead(LedgerError):
    """The ledger's head is not under a valid batch signature of a certified gateway key."""

    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(
            f"ledger seq {seq}: {NOT_SIGNED} ({problem}); this gateway refuses to chain after it",
            "someone with the gateway database role wrote to the ledger: run "
            "`airflow-hoop audit verify`, rotate the gateway database password, investigate",
        )
        self.seq, self.problem = seq, problem


class BatchSigner:
    """Signs batches with the current process key; verifies foreign heads."""

    def __init__(self) -> None:
        self.current: ProcessKey | None = None
        self.certified = CertifiedKeys(None)
        self._own: tuple[int, str] | None = None  # the last head this process sealed

    def set_vault_keys(self, keys: PublicKeySet) -> None:
        self.certified = CertifiedKeys(keys)

    def sign(self, key: ProcessKey | None, first_seq: int, last_seq: int, head: str) -> str:
        if key is None:
            raise LedgerError(
                "this gateway process has no certified ledger key yet",
                "wait for the gateway to finish starting (its key is certified by Vault)",
            )
        self._own = (last_seq, head)
        return sign_batch(key.private, key.key_id, first_seq, last_seq, head)

    async def check_head(self, conn: Any, head: Head | None) -> None:
        """Raise ``UnsignedHead`` unless the head is ours or under a valid batch signature."""
        if head is None or head[0] is None or (head[0], head[1]) == self._own:
            return
        problem = (await self._check(conn, head))[1]
        if problem is not None:
            raise UnsignedHead(head[0], problem)

    async def coverage(self, conn: Any, after_seq: int, head_seq: int) -> tuple[int, int | None]:
        """Check every batch signature of ``after_seq < seq <= head_seq`` (the checkpoint
        signer, before it signs): how many, and the first record none validly covers."""
        cur = await conn.execute(
            "SELECT seq, hash, batch_sig, time FROM ledger WHERE seq > %s AND seq <= %s "
            "AND batch_sig IS NOT NULL ORDER BY seq",
            (after_seq, head_seq),
        )
        covered, batches = after_seq, 0
        for row in await cur.fetchall():
            first, problem = await self._check(conn, row)
            if problem is not None or first != covered + 1:
                return batches, covered + 1
            covered, batches = row[0], batches + 1
        return batches, None if covered == head_seq else covered + 1

    async def _check(self, conn: Any, head: Head) -> tuple[int | None, str | None]:
        """(first seq, None) when the row ends a validly signed batch; else what is wrong."""
        seq, digest, text, when = head[0], head[1], head[2], head[3]
        sig = parse_batch_sig(text) if text else None
        if sig is None:
            return None, "it carries no batch signature"
        if sig.key_id not in self.certified:
            await self._load_certificates(conn)
        problem = self.certified.precheck(sig, seq, when)
        key = self.certified.get(sig.key_id)
        if problem is None and key is not None and not key.verifies(sig, seq, digest):
            problem = bad_signature(sig, seq)
        return sig.first_seq, problem

    async def _load_certificates(self, conn: Any) -> None:
        """Read the ledger's key certificates (few: one per process start or renewal)."""
        cur = await conn.execute(
            "SELECT seq, body FROM ledger WHERE kind = 'gateway.key' ORDER BY seq"
        )
        for seq, body in await cur.fetchall():
            problem = self.certified.add(json.loads(body)["body"])
            if problem is not None:
                log.error("ALARM: ledger seq %s: %s", seq, problem)
