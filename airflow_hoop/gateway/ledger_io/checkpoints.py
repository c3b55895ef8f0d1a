"""The periodic checkpoint signer: every N records or T seconds, sign the ledger's head.

A checkpoint states {number, first and last sequence, head hash, time, previous checkpoint's
hash}; Vault's transit engine signs it with an Ed25519 key only the gateway's policy may use.
The checkpoint is appended to the ledger (so it is chained like any record) and, once that
has committed, written to the anchor sink outside the database.

Several gateway processes may run a signer each: a transaction-scoped advisory lock (tried,
never waited for) lets one of them sign at a time, and the last checkpoint is read inside
that lock, so checkpoints never fork. Signing happens outside the ledger's append lock:
appends go on while Vault answers, and the checkpoint covers the head it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_hoop.errors import HoopError
from airflow_hoop.gateway.db.appender import append_in
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.gateway.settings import CheckpointSettings
from airflow_hoop.gateway.vault import GatewayVaultClient
from airflow_hoop.ledger.anchor import AnchorSink, DirectoryAnchor
from airflow_hoop.ledger.batch import NOT_SIGNED
from airflow_hoop.ledger.checkpoint import (
    GENESIS_CHECKPOINT,
    KeySource,
    PublicKeySet,
    checkpoint_hash,
    statement_digest,
)
from airflow_hoop.ledger.records import Checkpoint, CheckpointStatement
from airflow_hoop.wire.sessions import CheckpointNote

log = logging.getLogger(__name__)

#: Advisory lock of the signer ("hoopckpt" in ASCII); distinct from the append lock.
CHECKPOINT_LOCK_KEY = 0x686F6F70636B7074
#: Who the checkpoint records name as their actor.
ACTOR = "gateway"


class CheckpointSigner:
    """Signs checkpoints in the background; ``checkpoint_now`` signs one at once (if due)."""

    def __init__(
        self,
        settings: CheckpointSettings,
        store: GatewayStore,
        vault: GatewayVaultClient,
        anchor: AnchorSink | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.vault = vault
        self.anchor = anchor
        if anchor is None and settings.anchor_dir:
            self.anchor = DirectoryAnchor(settings.anchor_dir)
        self._task: asyncio.Task[None] | None = None
        self._anchored_seq = 0  # ledger seq of the last checkpoint known to be anchored

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if not self.settings.enabled:
            log.warning("ledger checkpoints are disabled: the ledger is not signed")
            return
        if self.anchor is None:
            log.warning(
                "no anchor sink is configured: a truncated ledger tail cannot be detected "
                "(set checkpoints.anchor_dir)"
            )
        self._task = asyncio.create_task(self._loop(), name="checkpoint-signer")

    async def stop(self) -> None:
        """Stop the loop, then sign what arrived since the last checkpoint."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await self.checkpoint_now(force=True)
        except HoopError as exc:
            log.error("final checkpoint not written: %s", exc)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            try:
                await self.checkpoint_now()
            except HoopError as exc:
                # The ledger stays correct; only the signature is late. Say so loudly.
                log.error("checkpoint not written (will retry): %s", exc)
            except Exception:
                log.exception("checkpoint signer failed (will retry)")

    # -- one checkpoint ----------------------------------------------------------------------
    async def checkpoint_now(self, *, force: bool = False) -> Checkpoint | None:
        """Sign the head if a checkpoint is due (``force``: if any record is unsigned)."""
        written: tuple[int, Checkpoint] | None = None
        async with self.store.connection("write a ledger checkpoint") as conn, conn.transaction():
            cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (CHECKPOINT_LOCK_KEY,))
            locked = await cur.fetchone()
            if not (locked and locked[0]):
                return None  # another gateway process is signing right now
            last_seq, last = await _last_checkpoint(conn)
            cur = await conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
            head = await cur.fetchone()
            if head is None or head[0] <= last_seq:
                return None
            now = datetime.now(timezone.utc)
            if not force and not self._due(head[0] - last_seq, last, now):
                return None
            covered_from = last.statement.last_seq if last else 0
            batches, unsigned_from = await self.store.signer.coverage(conn, covered_from, head[0])
            if unsigned_from is not None:
                # Signed all the same (a refusal would leave later records unanchored), with
                # the finding in the statement: the anchor keeps it outside the database.
                log.error(
                    "ALARM: ledger seq %d: %s (the checkpoint names it)", unsigned_from, NOT_SIGNED
                )
            statement = CheckpointStatement(
                number=last.statement.number + 1 if last else 1,
                first_seq=last.statement.last_seq + 1 if last else 1,
                last_seq=head[0],
                head_hash=head[1],
                time=now,
                prev_checkpoint=checkpoint_hash(last.statement) if last else GENESIS_CHECKPOINT,
                batches=batches,
                unsigned_from=unsigned_from,
            )
            version, signature = await self.vault.sign_digest(statement_digest(statement))
            checkpoint = Checkpoint(
                statement=statement,
                key_name=self.vault.settings.checkpoint_key,
                key_version=version,
                signature=signature,
            )
            appended = await append_in(conn, self.store.signer, None, ACTOR, checkpoint)
            written = (appended.seq, checkpoint)
        # Committed: now the anchor (a crash here leaves it behind; the next round catches up).
        await self._anchor_up_to(*written)
        return written[1]

    async def note(self) -> CheckpointNote | None:
        """The newest checkpoint and by when every record appended so far is covered (a step's
        end tells its task, for the OpenLineage facet); None when checkpoints are off."""
        settings = self.settings
        if not settings.enabled:
            return None
        async with self.store.connection("read the newest checkpoint") as conn:
            seq, last = await _last_checkpoint(conn)
        wait = settings.interval_seconds + settings.poll_seconds
        return CheckpointNote(
            checkpoint_seq=seq or None,
            covers_through_seq=last.statement.last_seq if last else 0,
            every_records=settings.every_records,
            interval_seconds=settings.interval_seconds,
            due_by=datetime.now(timezone.utc) + timedelta(seconds=wait),
        )

    def _due(self, pending: int, last: Checkpoint | None, now: datetime) -> bool:
        if pending >= self.settings.every_records or last is None:
            return True
        age = (now - last.statement.time).total_seconds()
        return age >= self.settings.interval_seconds

    async def _anchor_up_to(self, seq: int, checkpoint: Checkpoint) -> None:
        """Write every checkpoint the anchor lacks, up to this one, in order. A failure is
        logged, not raised: the checkpoint is committed; the next one catches up."""
        if self.anchor is None:
            return
        try:
            if self._anchored_seq == 0:
                last = await asyncio.to_thread(self._last_anchored)
                self._anchored_seq = await self._seq_of(last)
            for record_seq, earlier in await self._checkpoints_after(self._anchored_seq, seq):
                await asyncio.to_thread(self.anchor.put, earlier)
                self._anchored_seq = record_seq
        except (OSError, HoopError) as exc:
            log.error(
                "checkpoint %d is in the ledger but not yet in the anchor %s (retried with the "
                "next checkpoint): %s",
                checkpoint.statement.number,
                self.anchor.location,
                exc,
            )

    def _last_anchored(self) -> Checkpoint | None:
        assert self.anchor is not None
        number = self.anchor.last_number()
        entry = self.anchor.get(number) if number else None
        return None if entry is None else entry.checkpoint()

    async def _seq_of(self, checkpoint: Checkpoint | None) -> int:
        """Ledger seq of the record holding ``checkpoint`` (0 when the ledger lacks it)."""
        if checkpoint is None:
            return 0
        async with self.store.connection("read the ledger's checkpoints") as conn:
            cur = await conn.execute(
                "SELECT seq, body FROM ledger WHERE kind = 'checkpoint' AND seq > %s "
                "ORDER BY seq LIMIT 1",
                (checkpoint.statement.last_seq,),
            )
            row = await cur.fetchone()
        return int(row[0]) if row and _parse(row[1]) == checkpoint else 0

    async def _checkpoints_after(self, after: int, through: int) -> list[tuple[int, Checkpoint]]:
        async with self.store.connection("read the ledger's checkpoints") as conn:
            cur = await conn.execute(
                "SELECT seq, body FROM ledger WHERE kind = 'checkpoint' AND seq > %s "
                "AND seq <= %s ORDER BY seq",
                (after, through),
            )
            return [(seq, _parse(body)) for seq, body in await cur.fetchall()]

    # -- the public key ----------------------------------------------------------------------
    async def public_keys(self) -> PublicKeySet:
        """The checkpoint key's public halves, read from Vault now."""
        keys = await self.vault.checkpoint_public_keys()
        cfg = self.vault.settings
        return PublicKeySet(
            key_name=cfg.checkpoint_key,
            keys=keys,
            source=KeySource(
                how="read by the gateway from Vault's transit engine",
                url=f"{cfg.url.rstrip('/')}/v1/{cfg.transit_mount}/keys/{cfg.checkpoint_key}",
                fetched_at=datetime.now(timezone.utc),
            ),
        )


async def _last_checkpoint(conn: Any) -> tuple[int, Checkpoint | None]:
    cur = await conn.execute(
        "SELECT seq, body FROM ledger WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1"
    )
    row = await cur.fetchone()
    if row is None:
        return 0, None
    return int(row[0]), _parse(row[1])


def _parse(body: str) -> Checkpoint:
    return Checkpoint.model_validate(json.loads(body)["body"])
