"""The gateway settings' ``notifications``: the approval webhook (docs/notifications.md).

Part of the one settings model (``settings.GatewaySettings.notifications``); kept apart as
``connection_settings`` is, so that the notifications package builds on it without a cycle.
"""

from __future__ import annotations

import os
import stat

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

#: The signature header: ``sha256=<hex HMAC-SHA256 of the body>`` (the same form as GitHub's).
SIGNATURE_HEADER = "X-Hoop-Signature-256"
DELIVERY_HEADER = "X-Hoop-Delivery"
EVENT_HEADER = "X-Hoop-Event"


class WebhookSettings(BaseModel):
    """Where the gateway posts approval notifications, and the secret it signs them with.

    ``secret_file`` holds the HMAC key (at least 32 bytes; surrounding whitespace ignored). It
    must be a regular file readable by the gateway's user only (mode 0600 or stricter), or the
    settings are refused: a secret others can read lets them forge notifications.
    """

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="http(s) URL the notifications are POSTed to")
    secret_file: str = Field(description="file holding the HMAC-SHA256 key (mode 0600)")
    timeout: float = Field(5.0, gt=0, le=60, description="seconds per attempt")
    attempts: int = Field(4, ge=1, le=10, description="attempts before a delivery is failed")
    backoff_seconds: float = Field(
        1.0, ge=0, description="wait before the 2nd attempt; doubled after each failure"
    )

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"notifications.webhook.url must be http(s), not {value[:50]!r}")
        return value

    @field_validator("secret_file")
    @classmethod
    def _private(cls, value: str) -> str:
        try:
            info = os.stat(value)
        except OSError as exc:
            raise ValueError(f"cannot read webhook secret_file {value}: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"webhook secret_file {value} is not a regular file")
        if info.st_mode & 0o077:
            raise ValueError(
                f"webhook secret_file {value} is readable by others (mode "
                f"{stat.S_IMODE(info.st_mode):o}); chmod 600 it"
            )
        _read_key(value)  # now, so that check-config and the start name a short key
        return value

    def secret(self) -> SecretStr:
        """The key, read at each start (rotate the file, restart the gateway)."""
        return SecretStr(_read_key(self.secret_file).decode("utf-8", "surrogateescape"))


def _read_key(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            key = fh.read().strip()
    except OSError as exc:
        raise ValueError(f"cannot read webhook secret_file {path}: {exc.strerror}") from None
    if len(key) < 32:
        raise ValueError(f"webhook secret_file {path} holds fewer than 32 bytes; use a random key")
    return key


class NotificationSettings(BaseModel):
    """Approval notifications sent by the gateway itself (independent of Airflow's notifiers).

    ``airflow_base_url`` is the Airflow UI's address (its ``[api] base_url``): the links to the
    Approvals tab are built under it. A reminder goes out ``reminder_lead_seconds`` before a
    pending review's wait deadline (the requesting task's timeout), or at half the wait when that
    is shorter; once.
    """

    model_config = ConfigDict(extra="forbid")

    webhook: WebhookSettings | None = None
    airflow_base_url: str | None = Field(None, description="the Airflow UI, for deep links")
    reminder_lead_seconds: float = Field(600.0, gt=0)
    poll_seconds: float = Field(2.0, gt=0, description="how often due reminders are looked for")
    resend_after_seconds: float = Field(
        300.0,
        gt=0,
        description="a delivery still 'sending' this long after it was claimed (its gateway "
        "process died) is sent again; a pending review this old with no request "
        "notification on record (the process died between the review and its notification) "
        "gets one. Receivers deduplicate by X-Hoop-Delivery",
    )
