"""The approval webhook: one signed POST per notification, retried with backoff.

The body is the notification's JSON (``wire.notifications.ApprovalNotification``); the header
``X-Hoop-Signature-256: sha256=<hex>`` is its HMAC-SHA256 under the key of ``secret_file``, so a
receiver that knows the key can trust the body (``verify_signature`` is what it runs). The body
carries a delivery id and the time it was sent, so a receiver can refuse a replay.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx

from airflow_hoop.gateway.notification_settings import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    WebhookSettings,
)
from airflow_hoop.wire.notifications import ApprovalNotification

log = logging.getLogger(__name__)


def signature(key: bytes, body: bytes) -> str:
    """The header value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(key: bytes, body: bytes, header: str | None) -> bool:
    """What a receiver checks (constant-time): the header signs exactly these bytes."""
    return bool(header) and hmac.compare_digest(signature(key, body), str(header))


@dataclass(frozen=True)
class Delivery:
    """The outcome of one notification: delivered or not, after how many attempts, why not."""

    ok: bool
    attempts: int
    error: str | None = None


class WebhookSender:
    """Posts notifications to ``notifications.webhook.url``; never raises."""

    def __init__(self, settings: WebhookSettings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._key = settings.secret().get_secret_value().encode("utf-8", "surrogateescape")
        self._client = client or httpx.AsyncClient(trust_env=False, follow_redirects=False)
        # Where it goes, for logs: never the path or query (they may carry a token).
        parsed = urlparse(settings.url)
        self.where = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or ''}".rstrip(":")

    async def close(self) -> None:
        await self._client.aclose()

    async def deliver(self, notification: ApprovalNotification) -> Delivery:
        """POST the notification until a 2xx, at most ``attempts`` times, doubling the wait."""
        body = notification.model_dump_json().encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "airflow-hoop-gateway",
            SIGNATURE_HEADER: signature(self._key, body),
            DELIVERY_HEADER: notification.id,
            EVENT_HEADER: notification.kind,
        }
        wait = self.settings.backoff_seconds
        error = "not attempted"
        for attempt in range(1, self.settings.attempts + 1):
            try:
                response = await self._client.post(
                    self.settings.url, content=body, headers=headers, timeout=self.settings.timeout
                )
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__} reaching {self.where}"
            else:
                if 200 <= response.status_code < 300:
                    return Delivery(True, attempt)
                error = f"{self.where} answered HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    return Delivery(False, attempt, error)  # the receiver refuses it: no retry
            if attempt < self.settings.attempts:
                await asyncio.sleep(wait)
                wait *= 2
        return Delivery(False, self.settings.attempts, error)
