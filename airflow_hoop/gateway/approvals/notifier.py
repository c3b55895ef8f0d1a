"""Approval notifications sent by the gateway: request, reminder before the wait ends, decision.

Called by the review service after a review row is committed; everything here runs in
background tasks and catches every error, so a notification never blocks, fails, approves,
rejects or loses a review. Each notification is a row of ``review_notifications``
(``db/notification_outbox.py``): delivered, failed (with the error) or skipped. The reminder is
a scheduled row that one gateway process claims when it is due, and sends only while the
review is still pending: once, across processes and restarts. The sweep also sends what a dead
process left unsent: deliveries cut short, requests and decisions with no row at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from airflow_hoop.gateway.approvals.store import ReviewRow, ReviewStore, utc_now
from airflow_hoop.gateway.approvals.webhook import WebhookSender
from airflow_hoop.gateway.approvals.wire import to_review
from airflow_hoop.gateway.db.notification_outbox import NotificationOutbox, NotificationRow
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.gateway.notification_settings import NotificationSettings
from airflow_hoop.wire.notifications import ApprovalNotification, NotificationKind, reminder_time

log = logging.getLogger(__name__)


class ReviewNotifier:
    """The gateway's approval notifications (``notifications.webhook``)."""

    def __init__(
        self, settings: NotificationSettings, store: GatewayStore, sender: WebhookSender
    ) -> None:
        self.settings = settings
        self.outbox = NotificationOutbox(store)
        self.reviews = ReviewStore(store)
        self.sender = sender
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None

    @classmethod
    def create(cls, settings: NotificationSettings, store: GatewayStore) -> ReviewNotifier | None:
        """The notifier of these settings; None when no webhook is configured."""
        if settings.webhook is None:
            return None
        return cls(settings, store, WebhookSender(settings.webhook))

    # -- what the review service calls (never awaits a delivery) -----------------------------
    def requested(self, row: ReviewRow, wait_deadline: datetime | None) -> None:
        self._spawn(self._requested(row, wait_deadline))

    def decided(self, row: ReviewRow) -> None:
        self._spawn(self._decided(row, len(row.decisions)))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.create_task(self._reminders(), name="review-reminders")

    async def stop(self, grace: float = 5.0) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        if self._tasks:  # deliveries under way get a moment, then are abandoned (recorded)
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
        await self.sender.close()

    # -- internals ---------------------------------------------------------------------------
    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception:  # never reaches the review; the row says what was (not) sent
                log.exception("[notifications] unexpected error; the review goes on")

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _requested(self, row: ReviewRow, wait_deadline: datetime | None) -> None:
        # The reminder first: a slow receiver of the request must not delay its schedule.
        if wait_deadline is not None and wait_deadline > utc_now():
            due = reminder_time(row.created_at, wait_deadline, self.settings.reminder_lead_seconds)
            try:
                await self.outbox.add(
                    row.id,
                    "reminder",
                    "review.reminder",
                    due,
                    state="scheduled",
                    wait_deadline=wait_deadline,
                )
            except Exception as exc:
                log.warning(
                    "[notifications] cannot schedule the reminder of review %s: %s", row.id, exc
                )
        await self._send(row, "requested", "review.requested", wait_deadline)

    async def _decided(self, row: ReviewRow, n: int) -> None:
        # The n-th decision as it was: a re-send after a crash must not post a later one.
        as_decided = row.model_copy(update={"decisions": row.decisions[:n]})
        await self._send(as_decided, f"decided:{n}", "review.decided", None)

    async def _send(
        self,
        row: ReviewRow,
        key: str,
        kind: NotificationKind,
        wait_deadline: datetime | None,
    ) -> None:
        try:
            entry = await self.outbox.add(
                row.id, key, kind, utc_now(), state="sending", wait_deadline=wait_deadline
            )
        except Exception as exc:
            log.warning("[notifications] cannot record the %s of review %s: %s", kind, row.id, exc)
            return
        if entry is not None:  # None: this notification was already sent
            await self._deliver(row, entry)

    async def _deliver(self, row: ReviewRow, entry: NotificationRow) -> None:
        kind: NotificationKind = entry.kind  # type: ignore[assignment]
        try:
            notification = ApprovalNotification.of_review(
                to_review(row),
                kind,
                base_url=self.settings.airflow_base_url,
                wait_deadline=entry.wait_deadline,
                delivery_id=str(entry.id),
            )
            result = await self.sender.deliver(notification)
        except asyncio.CancelledError:
            await self._finish(entry, "failed", 0, "gateway stopped before delivery")
            raise
        except Exception as exc:  # a bug here must not reach the review
            log.exception("[notifications] %s of review %s not sent", kind, row.id)
            await self._finish(entry, "failed", 0, f"{type(exc).__name__}")
            return
        if result.ok:
            log.info("[notifications] %s of review %s delivered", kind, row.id)
            await self._finish(entry, "sent", result.attempts)
        else:
            log.warning(
                "[notifications] %s of review %s not delivered after %d attempt(s): %s. "
                "Fix: check the webhook receiver; the review goes on without it",
                kind,
                row.id,
                result.attempts,
                result.error,
            )
            await self._finish(entry, "failed", result.attempts, result.error)

    async def _finish(
        self, entry: NotificationRow, state: Any, attempts: int, error: str | None = None
    ) -> None:
        try:
            await self.outbox.finish(entry.id, state, attempts, error)
        except Exception as exc:
            log.warning("[notifications] cannot record delivery %s: %s", entry.id, exc)

    async def _reminders(self) -> None:
        stale = self.settings.resend_after_seconds
        while True:
            try:
                for entry in await self.outbox.claim_due(stale):
                    row = await self.reviews.get(entry.review_id)
                    # A reminder only while the review waits; a request or decision whose
                    # delivery was cut short (its process died) goes out again regardless.
                    if row is None or (entry.kind == "review.reminder" and row.status != "PENDING"):
                        await self._finish(entry, "skipped", 0)
                        continue
                    if entry.key.startswith("decided:"):  # the decision it was for, not a later one
                        n = int(entry.key.partition(":")[2])
                        row = row.model_copy(update={"decisions": row.decisions[:n]})
                    self._spawn(self._deliver(row, entry))
                for review_id in await self.outbox.unannounced_reviews(stale):
                    row = await self.reviews.get(review_id)
                    if row is not None:
                        self._spawn(self._send(row, "requested", "review.requested", None))
                for review_id, n in await self.outbox.undelivered_decisions(stale):
                    row = await self.reviews.get(review_id)
                    if row is not None:
                        self._spawn(self._decided(row, n))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("[notifications] reminder sweep failed (%s); retrying", exc)
            await asyncio.sleep(self.settings.poll_seconds)
