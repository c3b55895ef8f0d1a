"""LedgerVitals: the few numbers that say whether the gateway's record keeping is healthy.

Read from the database, not from this process's memory, so every replica and every worker
process reports the same ledger (a scrape that lands on any of them sees the whole service).
One statement; every part uses an index (the ledger's primary key, its partial checkpoint
index, the reviews' status), so a scrape costs the same on a ledger of any size.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

_VITALS = """
WITH cp AS (
    SELECT time, (body::jsonb #>> '{body,statement,last_seq}')::bigint AS covered
    FROM ledger WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1
)
SELECT
    (SELECT coalesce(max(seq), 0) FROM ledger),
    (SELECT time FROM cp),
    (SELECT coalesce(covered, 0) FROM cp),
    (SELECT time FROM ledger
      WHERE seq > coalesce((SELECT covered FROM cp), 0) AND kind <> 'checkpoint'
      ORDER BY seq LIMIT 1),
    (SELECT count(*) FROM reviews WHERE status = 'PENDING'),
    now()
"""


class LedgerVitals(BaseModel):
    """The ledger's head, its newest checkpoint, what waits for one, and pending reviews."""

    head_seq: int
    checkpoint_time: datetime | None
    checkpoint_covers: int
    oldest_unsigned_time: datetime | None
    pending_reviews: int
    now: datetime

    @property
    def unsigned_records(self) -> int:
        """Records past the newest checkpoint's head (checkpoint records included)."""
        return max(0, self.head_seq - self.checkpoint_covers)

    @property
    def checkpoint_age_seconds(self) -> float | None:
        if self.checkpoint_time is None:
            return None
        return (self.now - self.checkpoint_time).total_seconds()

    @property
    def unsigned_wait_seconds(self) -> float:
        """How long the oldest record no checkpoint covers has waited (0: none waits)."""
        if self.oldest_unsigned_time is None:
            return 0.0
        return max(0.0, (self.now - self.oldest_unsigned_time).total_seconds())


async def read_vitals(conn: Any) -> LedgerVitals:
    """The vitals, on a connection of the gateway's pool."""
    cur = await conn.execute(_VITALS)
    row = await cur.fetchone()
    head, cp_time, covers, oldest, pending, now = row
    return LedgerVitals(
        head_seq=head,
        checkpoint_time=cp_time,
        checkpoint_covers=covers or 0,
        oldest_unsigned_time=oldest,
        pending_reviews=pending,
        now=now,
    )
