"""``review_notifications``: each approval notification the gateway sends, and its fate.

One row per (review, key): ``requested``, ``reminder``, ``decided:<n>`` (the n-th decision).
The unique key makes a reminder go out once across every gateway process and restart; the row
records attempts and the last error, so a failed delivery is on record (the review is not
touched by it: notifications are operational state, never evidence, so not in the ledger).
Applied by ``schema.migrate``; used by ``approvals/notifier.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel

from airflow_hoop.gateway.db.store import GatewayStore

NOTIFICATIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS review_notifications (
    id          uuid PRIMARY KEY,
    review_id   uuid NOT NULL,
    key         text NOT NULL,
    kind        text NOT NULL,
    state       text NOT NULL CHECK (state IN ('scheduled', 'sending', 'sent', 'failed',
                                                 'skipped')),
    due_at      timestamptz NOT NULL,
    wait_deadline timestamptz,
    attempts    int NOT NULL DEFAULT 0,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz,
    claimed_at  timestamptz,
    UNIQUE (review_id, key)
);
ALTER TABLE review_notifications ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
CREATE INDEX IF NOT EXISTS review_notifications_due_idx
    ON review_notifications (due_at) WHERE state = 'scheduled';
REVOKE ALL ON review_notifications FROM PUBLIC;
"""

State = Literal["scheduled", "sending", "sent", "failed", "skipped"]
_COLUMNS = "id, review_id, key, kind, state, due_at, wait_deadline, attempts, last_error"


def grant_notifications(conn: Any, role: sql.Identifier) -> None:
    """What the gateway role needs on the table (called by ``schema.migrate``)."""
    conn.execute(sql.SQL("REVOKE ALL ON review_notifications FROM {}").format(role))
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON review_notifications TO {}").format(role))


class NotificationRow(BaseModel):
    """One notification of a review."""

    id: uuid.UUID
    review_id: uuid.UUID
    key: str
    kind: str
    state: State
    due_at: datetime
    wait_deadline: datetime | None = None
    attempts: int = 0
    last_error: str | None = None


class NotificationOutbox:
    """Rows of ``review_notifications`` in the gateway database."""

    def __init__(self, store: GatewayStore) -> None:
        self.store = store

    async def add(
        self,
        review_id: uuid.UUID,
        key: str,
        kind: str,
        due_at: datetime,
        *,
        state: State = "sending",
        wait_deadline: datetime | None = None,
    ) -> NotificationRow | None:
        """A new notification; None when that (review, key) already has one (sent once)."""
        async with self.store.connection("record a notification") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"INSERT INTO review_notifications ({_COLUMNS}, claimed_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, 0, NULL, "
                "CASE WHEN %s = 'sending' THEN now() END) "
                f"ON CONFLICT (review_id, key) DO NOTHING RETURNING {_COLUMNS}",
                (uuid.uuid4(), review_id, key, kind, state, due_at, wait_deadline, state),
            )
            found = await cur.fetchone()
            return None if found is None else NotificationRow.model_validate(found)

    async def claim_due(self, stale_after: float, limit: int = 50) -> list[NotificationRow]:
        """Rows to send now, taken by this process only (``SKIP LOCKED``): scheduled ones whose
        time has come, and deliveries still ``sending`` ``stale_after`` seconds after their
        claim (the process that claimed them died: sent again, at least once)."""
        async with self.store.connection("claim due notifications") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "UPDATE review_notifications SET state = 'sending', claimed_at = now() "
                "WHERE id IN (SELECT id FROM review_notifications WHERE "
                "(state = 'scheduled' AND due_at <= now()) OR (state = 'sending' AND "
                "claimed_at < now() - make_interval(secs => %s)) "
                "ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"RETURNING {_COLUMNS}",
                (stale_after, limit),
            )
            return [NotificationRow.model_validate(r) for r in await cur.fetchall()]

    async def unannounced_reviews(self, older_than: float, limit: int = 50) -> list[uuid.UUID]:
        """Pending reviews of the last day, older than ``older_than`` seconds, that have no
        request notification on record (the process died between the review's commit and its
        notification)."""
        async with self.store.connection("find unannounced reviews") as conn:
            cur = await conn.execute(
                "SELECT r.id FROM reviews r WHERE r.status = 'PENDING' "
                "AND r.created_at < now() - make_interval(secs => %s) "
                "AND r.created_at > now() - interval '1 day' AND NOT EXISTS ("
                "SELECT 1 FROM review_notifications n WHERE n.review_id = r.id "
                "AND n.key = 'requested') ORDER BY r.created_at LIMIT %s",
                (older_than, limit),
            )
            return [row[0] for row in await cur.fetchall()]

    async def undelivered_decisions(
        self, older_than: float, limit: int = 50
    ) -> list[tuple[uuid.UUID, int]]:
        """(review, n) of each n-th decision of the last day, older than ``older_than``
        seconds, with no ``decided:<n>`` notification on record (the process died between the
        decision's commit and its notification)."""
        async with self.store.connection("find undelivered decisions") as conn:
            cur = await conn.execute(
                "SELECT r.id, n FROM reviews r, "
                "generate_series(1, jsonb_array_length(r.decisions)) AS n "
                "WHERE r.decided_at < now() - make_interval(secs => %s) "
                "AND r.decided_at > now() - interval '1 day' AND NOT EXISTS ("
                "SELECT 1 FROM review_notifications x WHERE x.review_id = r.id "
                "AND x.key = 'decided:' || n) ORDER BY r.decided_at, n LIMIT %s",
                (older_than, limit),
            )
            return [(row[0], int(row[1])) for row in await cur.fetchall()]

    async def finish(
        self, id_: uuid.UUID, state: State, attempts: int, error: str | None = None
    ) -> None:
        async with self.store.connection("record a notification") as conn:
            await conn.execute(
                "UPDATE review_notifications SET state = %s, attempts = %s, last_error = %s, "
                "done_at = now() WHERE id = %s",
                (state, attempts, None if error is None else error[:500], id_),
            )

    async def of_review(self, review_id: uuid.UUID) -> list[NotificationRow]:
        """A review's notifications, oldest first (for operators and tests)."""
        async with self.store.connection("read notifications") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {_COLUMNS} FROM review_notifications WHERE review_id = %s "
                "ORDER BY created_at, key",
                (review_id,),
            )
            return [NotificationRow.model_validate(r) for r in await cur.fetchall()]
