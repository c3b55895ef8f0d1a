"""Approval notifications through Airflow's notifiers, sent by the waiting task itself.

The notifiers are the ``BaseNotifier`` objects Airflow users already configure for
``on_*_callback`` (``SmtpNotifier``, ``SlackWebhookNotifier``, any; a plain callable taking the
context works too): ``approval_notifiers=[...]`` on the operator or sensor, and/or the
deployment's defaults in ``[hoop] approval_notifiers`` (comma-separated ``module.attribute``
paths). Each is called with the task's context plus ``hoop_notification`` (an
``ApprovalNotification``), so its templates write e.g. ``{{ hoop_notification.subject }}``.

Why the task side: the notifiers are the DAG's (and the worker's connections, e.g. the SMTP
one), and the task already holds the review the gateway returned. The request is sent when the
task asks; the reminder when the trigger wakes the task before its wait times out; the
decision when the task resumes with it. A notifier that fails is logged and ignored: the wait,
the review and the decision never depend on it (docs/notifications.md).
"""

from __future__ import annotations

import copy
import importlib
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_hoop.errors import ConfigError
from airflow_hoop.triggers.review import REMIND as REMIND
from airflow_hoop.wire.notifications import (
    ApprovalNotification,
    NotificationKind,
    one_line,
    reminder_time,
)
from airflow_hoop.wire.reviews import Review, ReviewCreated

log = logging.getLogger(__name__)

#: The statuses a decision notification is posted back for.
DECIDED = frozenset({"APPROVED", "REJECTED", "REVOKED"})
DEFAULT_REMINDER_LEAD = 600.0


def _conf(key: str) -> str | None:
    from airflow.configuration import conf

    value = conf.get("hoop", key, fallback=None)
    return value.strip() if value and value.strip() else None


def base_url() -> str | None:
    """The Airflow UI the links lead to: ``[hoop] airflow_base_url``, else ``[api] base_url``."""
    from airflow.configuration import conf

    return _conf("airflow_base_url") or conf.get("api", "base_url", fallback=None) or None


def reminder_lead() -> float:
    raw = _conf("approval_reminder_lead_seconds")
    try:
        return float(raw) if raw else DEFAULT_REMINDER_LEAD
    except ValueError:
        raise ConfigError(
            f"[hoop] approval_reminder_lead_seconds is not a number: {str(raw)[:50]!r}",
            "set it to the seconds before a wait's timeout the reminder goes out",
        ) from None


def default_notifiers() -> list[Any]:
    """``[hoop] approval_notifiers``: each path names a notifier, or a callable returning some."""
    out: list[Any] = []
    for path in (_conf("approval_notifiers") or "").split(","):
        path = path.strip()
        if not path:
            continue
        module, _, name = path.rpartition(".")
        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"[hoop] approval_notifiers names {path!r}, which cannot be imported "
                f"({type(exc).__name__})",
                "name a module attribute holding a BaseNotifier (module.attribute)",
            ) from None
        if not hasattr(found, "notify") and callable(found):
            try:
                found = found()  # a factory
            except Exception as exc:
                raise ConfigError(
                    f"[hoop] approval_notifiers: {path}() failed ({type(exc).__name__})",
                    "name a notifier, or a factory that returns notifiers without arguments",
                ) from None
        out.extend(found if isinstance(found, list | tuple) else [found])
    return out


def notifiers_of(task: Any) -> list[Any]:
    """The task's ``approval_notifiers`` followed by the deployment's defaults.

    A wrong ``[hoop] approval_notifiers`` is logged, not raised: notifications never stop a
    review's wait.
    """
    try:
        defaults = default_notifiers()
    except ConfigError as exc:
        log.warning("%s; approvals go on without the default notifiers", exc)
        defaults = []
    return [*(getattr(task, "approval_notifiers", None) or ()), *defaults]


def deadline_in(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def remind_at(created: datetime, deadline: datetime | None) -> float | None:
    """When the trigger wakes the task for the reminder (epoch seconds), if it should."""
    if deadline is None:
        return None
    at = reminder_time(created, deadline, reminder_lead())
    return at.timestamp() if at < deadline else None


def notify(
    notifiers: Sequence[Any],
    context: Mapping[str, Any],
    review: Review,
    kind: NotificationKind,
    wait_deadline: datetime | None = None,
) -> int:
    """Call every notifier; returns how many succeeded. Never raises."""
    if not notifiers:
        return 0
    try:
        notification = ApprovalNotification.of_review(
            review, kind, base_url=base_url(), wait_deadline=wait_deadline
        )
    except Exception as exc:
        log.warning("[approval notification] %s of review %s not built: %s", kind, review.id, exc)
        return 0
    sent = 0
    for notifier in notifiers:
        name = type(notifier).__name__
        try:
            # Rendering a notifier's templates changes it in place: each message renders a copy.
            instance = _copy(notifier)
            instance({**context, "hoop_notification": notification})
            sent += 1
        except Exception as exc:
            log.warning(
                "[approval notification] %s failed to send the %s of review %s (%s: %s). "
                "Fix: check the notifier's connection; the review goes on without it",
                name,
                kind,
                review.id,
                type(exc).__name__,
                one_line(str(exc), 200),
            )
    log.info(
        "[approval notification] %s of review %s: %d/%d sent", kind, review.id, sent, len(notifiers)
    )
    return sent


def remind_if_due(
    notifiers: Sequence[Any],
    context: Mapping[str, Any],
    created: ReviewCreated,
    gateway_url: str,
    deadline: datetime,
) -> bool:
    """A sensor that pokes (no trigger to wake it): the reminder, once, when it is due.

    Once across pokes and processes (reschedule mode starts a new one for each poke): the
    gateway grants the review's one task-side reminder to the first poke that claims it with
    the review's poll token. Never raises; returns whether the reminder went out.
    """
    at = remind_at(created.review.created_at, deadline)
    if not notifiers or at is None or datetime.now(timezone.utc).timestamp() < at:
        return False
    import httpx

    url = f"{gateway_url}/api/airflow-hoop/reviews/{created.review.id}/reminder"
    try:
        response = httpx.post(
            url,
            headers={"Authorization": f"Bearer {created.poll_token}"},
            trust_env=False,
            timeout=10.0,
        )
        claimed = response.status_code == 200 and response.json().get("claimed") is True
    except (httpx.HTTPError, ValueError) as exc:
        log.warning(
            "[approval notification] reminder of review %s not claimed: %s; "
            "the next poke tries again",
            created.review.id,
            type(exc).__name__,
        )
        return False
    if claimed:
        notify(notifiers, context, created.review, "review.reminder", deadline)
    return claimed


def decided_review(event: Mapping[str, Any]) -> Review | None:
    """The review of a trigger event that carries a decision, else None."""
    if event.get("status") not in DECIDED or "review" not in event:
        return None
    try:
        return Review.model_validate(event["review"])
    except ValueError:
        return None


def event_deadline(event: Mapping[str, Any]) -> datetime | None:
    raw = event.get("wait_deadline")
    try:
        return datetime.fromisoformat(str(raw)) if raw else None
    except ValueError:
        return None


def _copy(notifier: Any) -> Any:
    try:
        return copy.deepcopy(notifier)
    except Exception:
        return copy.copy(notifier)
