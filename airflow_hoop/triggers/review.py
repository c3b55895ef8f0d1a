"""ReviewTrigger: waits in the triggerer until a human decides a gateway review.

Shipped in the package (not in a DAG file) so that the triggerer can import it. It polls
``GET /api/airflow-hoop/reviews/{id}/poll`` with the review's poll token: a capability that
reads that one review's state and nothing else, so the triggerer needs no Vault login and
holds no step credential. Airflow stores trigger kwargs encrypted (Fernet). Hundreds of
waiting sensors share one event loop: each poll is one small HTTP request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent
from pydantic import ValidationError

from airflow_hoop.client.tls import verifying_context
from airflow_hoop.defaults import DEFAULT_POLL_INTERVAL
from airflow_hoop.wire.reviews import Review

log = logging.getLogger(__name__)

#: Statuses a human (or the gateway) has settled: the wait is over.
SETTLED = frozenset({"APPROVED", "REJECTED", "REVOKED", "PROCESSING", "EXECUTED"})
#: The event that wakes a waiting task to send its approval reminder (docs/notifications.md).
REMIND = "REMIND"

# One client per triggerer event loop and CA: connections are reused across waiting triggers.
_clients: dict[tuple[int, str | None], httpx.AsyncClient] = {}


def _client(ca_file: str | None) -> httpx.AsyncClient:
    key = (id(asyncio.get_running_loop()), ca_file)
    client = _clients.get(key)
    if client is None or client.is_closed:
        client = _clients[key] = httpx.AsyncClient(
            verify=verifying_context(ca_file),
            trust_env=False,
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=50),
            headers={"User-Client": "airflow-hoop-trigger"},
        )
    return client


class ReviewTrigger(BaseTrigger):
    """Fires once the review is decided: ``{"status": ..., "review": <hoop Review JSON>}``.

    Transient gateway failures (unreachable, 5xx) are logged and polled through: the wait
    survives a gateway restart as it survives a triggerer restart (the trigger is re-created
    from its kwargs). A review the gateway no longer knows, or a refused token, ends the wait
    with ``status: "ERROR"``.
    """

    def __init__(
        self,
        gateway_url: str,
        review_id: str,
        poll_token: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        end_task_on_approval: bool = False,
        remind_at: float | None = None,
        wait_deadline: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        super().__init__()
        #: The private CA of the gateway's certificate (the step's connection's ``ca_file``).
        self.ca_file = ca_file
        self.gateway_url = gateway_url.rstrip("/")
        self.review_id = review_id
        self.poll_token = poll_token
        self.poll_interval = max(float(poll_interval), 0.2)
        self.end_task_on_approval = end_task_on_approval
        #: Epoch seconds: while still pending then, wake the task for its reminder (once: the
        #: task defers again without it). None: no reminder.
        self.remind_at = remind_at
        #: When the task's wait times out (ISO); echoed in every event for the task's re-defer.
        self.wait_deadline = wait_deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_hoop.triggers.review.ReviewTrigger",
            {
                "gateway_url": self.gateway_url,
                "review_id": self.review_id,
                "poll_token": self.poll_token,
                "poll_interval": self.poll_interval,
                "end_task_on_approval": self.end_task_on_approval,
                "remind_at": self.remind_at,
                "wait_deadline": self.wait_deadline,
                "ca_file": self.ca_file,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        url = f"{self.gateway_url}/api/airflow-hoop/reviews/{self.review_id}/poll"
        headers = {"Authorization": f"Bearer {self.poll_token}"}
        self.log.info("waiting for review %s at %s", self.review_id, self.gateway_url)
        while True:
            event = await self._poll(url, headers)
            if event is not None:
                if self.end_task_on_approval and event["status"] == "APPROVED":
                    # A sensor has nothing left to do: end it here, without a worker start
                    # (saves seconds between the approval and the approved task).
                    self._log_decisions(event)
                    yield TaskSuccessEvent(xcoms={"return_value": event["review_id"]})
                else:
                    # the task resumes and fails, skips or runs (or sends its reminder)
                    yield TriggerEvent({**event, "wait_deadline": self.wait_deadline})
                return
            await asyncio.sleep(self.poll_interval)

    def _log_decisions(self, event: dict[str, Any]) -> None:
        review = Review.model_validate(event["review"])
        for d in review.airflow_hoop.decisions if review.airflow_hoop else []:
            self.log.info("%s", d.describe(review.id))
        self.log.info("review %s approved: the sensor succeeds", review.id)

    async def _poll(self, url: str, headers: dict[str, str]) -> dict[str, Any] | None:
        try:
            response = await _client(self.ca_file).get(url, headers=headers)
        except httpx.HTTPError as exc:
            self.log.warning(
                "[gateway] cannot reach the gateway at %s (%s); still waiting",
                self.gateway_url,
                type(exc).__name__,
            )
            return None
        return self._event(response)

    def _event(self, response: httpx.Response) -> dict[str, Any] | None:
        """What one poll's answer means: an event that ends the wait, or None (wait on)."""
        if response.status_code >= 500:
            self.log.warning(
                "[gateway] review poll answered %s; still waiting", response.status_code
            )
            return None
        if response.status_code != 200:
            message = _message(response)
            return {
                "status": "ERROR",
                "review_id": self.review_id,
                "error": f"[gateway review] the gateway refused to show review {self.review_id} "
                f"({response.status_code}: {message}). Fix: clear the sensor to request it again",
            }
        try:
            review = Review.model_validate(response.json())
        except (ValueError, ValidationError):
            self.log.warning("[gateway] review poll answered something else than a review")
            return None
        expired = bool(review.airflow_hoop and review.airflow_hoop.expired)
        if review.status in SETTLED or expired:
            return {
                "status": "EXPIRED" if expired else review.status,
                "review_id": review.id,
                "review": review.model_dump(mode="json"),
            }
        if self.remind_at is not None and time.time() >= self.remind_at:
            # Still pending near the timeout: the task sends its notifiers' reminder.
            # Where and how to go on waiting for this same review after the reminder: asking
            # again would open a new review if this one were decided meanwhile. (The poll
            # token is already in this trigger's stored kwargs; it reads this review only.)
            return {
                "status": REMIND,
                "review_id": review.id,
                "review": review.model_dump(mode="json"),
                "poll_token": self.poll_token,
                "gateway_url": self.gateway_url,
                "ca_file": self.ca_file,
            }
        return None


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message", body))[:300] if isinstance(body, dict) else str(body)[:300]
