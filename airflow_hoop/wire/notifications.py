"""Approval notifications: one payload for Airflow's notifiers and the gateway's webhook.

A notification leaves the trust boundary (chat, mail, a webhook receiver), so it carries what
an approver needs to find the review and nothing a log must not hold:

- the command as a **summary**, never the raw script: each SQL statement is re-printed from
  PostgreSQL's parser with every literal replaced by ``$n`` (comments dropped); a script that is
  not SQL (a shell command) or keeps a literal after normalisation is shown by size and digest
  only. Parameters are never shown. Everything is capped.
- every text field is **one line**: CR, LF and every other control character become a space,
  so no field can add a header to a mail or a line to a chat message.
- the **link** is built from the review the gateway returned (the DAG and run the gateway bound
  from the requesting step's own identity), each part percent-encoded, under a base URL from the
  deployment's configuration; it leads to the Approvals tab, where a person logs in and decides.
  A notification is never an approval channel.
"""

from __future__ import annotations

import html
import re
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Literal
from urllib.parse import quote, urlparse

import pglast
from pglast import parser as pg_parser
from pydantic import BaseModel, ConfigDict, Field, field_validator

from airflow_hoop.wire.reviews import Channel, Decision, Review, ReviewStatus

NotificationKind = Literal["review.requested", "review.reminder", "review.decided"]

#: Caps of what a notification shows.
MAX_FIELD = 300
MAX_JUSTIFICATION = 500
MAX_STATEMENT = 300
MAX_STATEMENTS = 5
MAX_SUMMARY = 1500

#: The plugin's Approvals tab (``plugins/app.py``'s ``url_route``) and page.
APPROVALS_TAB_ROUTE = "hoop-approvals-ti"
APPROVALS_PAGE_ROUTE = "hoop-approvals"

#: Tokens of PostgreSQL's scanner that are literals: none may survive into a summary.
_LITERAL_TOKENS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})
_SPACES = re.compile(r"\s+")


def one_line(value: str, cap: int = MAX_FIELD) -> str:
    """``value`` on one line: control, format and line/paragraph separators become spaces."""
    out = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in value
    )
    out = _SPACES.sub(" ", out).strip()
    return out if len(out) <= cap else out[: cap - 1] + "…"


def _statement_summary(script: str) -> str | None:
    """One statement with its literals as ``$n``, on one line; None when that is not certain."""
    try:
        normalized = pg_parser.normalize(script)
        printed = pglast.prettify(normalized)
        leftover = {t.name for t in pg_parser.scan(printed)}
    except Exception:  # ParseError, DeparseError...: not SQL we can re-print, show none of it
        return None
    if leftover & _LITERAL_TOKENS:
        return None
    return one_line(printed.rstrip(";"), MAX_STATEMENT)


def summarize(scripts: list[str], command_sha256: str) -> str:
    """What a notification shows of a command: normalised SQL, or its size and digest only."""
    lines = []
    for script in scripts[:MAX_STATEMENTS]:
        shown = _statement_summary(script)
        if shown is None:
            count = script.count("\n") + 1
            shown = f"[script of {count} line(s), not shown: open the review to read it]"
        lines.append(shown)
    tail = []
    if len(scripts) > MAX_STATEMENTS:
        tail.append(f"(+{len(scripts) - MAX_STATEMENTS} more statement(s))")
    tail.append(f"command sha256 {command_sha256[:16]}…")
    # The statements give way to the tail: the count and the digest are always shown.
    room = MAX_SUMMARY - sum(len(t) + 1 for t in tail)
    text = "\n".join(lines)
    if len(text) > room:
        text = text[: room - 1] + "…"
    return "\n".join([text, *tail])


def reminder_time(created: datetime, deadline: datetime, lead_seconds: float) -> datetime:
    """``lead_seconds`` before the deadline, or half-way through the wait when that is later."""
    wait = (deadline - created).total_seconds()
    return deadline - timedelta(seconds=min(lead_seconds, max(wait, 0.0) / 2))


def approvals_link(
    base_url: str | None, dag_id: str, run_id: str, task_id: str, map_index: int = -1
) -> str | None:
    """The Approvals tab of the target task instance in the Airflow UI, or None without a base.

    Each part is one percent-encoded path segment; a part made only of dots (which a browser
    would resolve as ``..``) falls back to the top-level Approvals page.
    """
    if not base_url:
        return None
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return None
    base = base_url.rstrip("/")
    parts = [dag_id, run_id, task_id]
    if any(not p or set(p) <= {"."} for p in parts):
        return f"{base}/plugin/{APPROVALS_PAGE_ROUTE}"
    dag, run, task = (quote(p, safe="") for p in parts)
    mapped = f"/mapped/{int(map_index)}" if map_index >= 0 else ""
    return f"{base}/dags/{dag}/runs/{run}/tasks/{task}{mapped}/plugin/{APPROVALS_TAB_ROUTE}"


class NotifiedDecision(BaseModel):
    """The decision a ``review.decided`` notification posts back."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    approver: str
    channel: Channel
    reason: str | None = None
    time: datetime
    break_glass: bool = False

    @field_validator("approver")
    @classmethod
    def _line(cls, value: str) -> str:
        return one_line(value)

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        return None if value is None else one_line(value, MAX_JUSTIFICATION)


class ApprovalNotification(BaseModel):
    """One approval notification: a review was requested, is about to time out, or was decided.

    In an Airflow notifier's templates it is ``hoop_notification``: e.g.
    ``subject="{{ hoop_notification.subject }}"``, ``html_content="{{ hoop_notification.html }}"``
    or ``text="{{ hoop_notification.text }}"``. The gateway webhook posts it as JSON.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field("", description="the gateway's delivery id (webhook); receivers dedupe on it")
    kind: NotificationKind
    review_id: str
    status: ReviewStatus
    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    requester: str = Field(description="the step that asked for the review")
    triggered_by: str | None = None
    connection: str
    command_sha256: str
    statement_count: int
    summary: str = Field(description="the command, literals replaced (see module doc)")
    justification: str = ""
    link: str | None = Field(None, description="the Approvals tab of the target task instance")
    wait_deadline: datetime | None = Field(None, description="when the waiting task times out")
    decision: NotifiedDecision | None = None
    sent_at: datetime

    @field_validator("dag_id", "run_id", "task_id", "requester", "triggered_by", "connection")
    @classmethod
    def _line(cls, value: str | None) -> str | None:
        return None if value is None else one_line(value)

    @field_validator("justification")
    @classmethod
    def _justification(cls, value: str) -> str:
        return one_line(value, MAX_JUSTIFICATION)

    @field_validator("summary")
    @classmethod
    def _summary(cls, value: str) -> str:
        # One statement per line: lines stay, everything else is made one line.
        lines = [one_line(line, MAX_STATEMENT) for line in value.splitlines()]
        return "\n".join(line for line in lines if line)[:MAX_SUMMARY]

    @classmethod
    def of_review(
        cls,
        review: Review,
        kind: NotificationKind,
        *,
        base_url: str | None,
        wait_deadline: datetime | None = None,
        delivery_id: str = "",
    ) -> ApprovalNotification:
        """The notification of a review as the gateway returned it (what approvers are shown)."""
        ext = review.airflow_hoop
        if ext is None:
            raise ValueError(f"review {review.id} has no airflow_hoop extension to notify about")
        t = ext.target
        decision = None
        if kind == "review.decided" and ext.decisions:
            last = ext.decisions[-1]
            decision = NotifiedDecision(
                decision=last.decision,
                approver=last.approver,
                channel=last.channel,
                reason=last.reason,
                time=last.time,
                break_glass=last.break_glass,
            )
        return cls(
            id=delivery_id,
            kind=kind,
            review_id=review.id,
            status=review.status,
            dag_id=t.dag_id,
            run_id=t.run_id,
            task_id=t.task_id,
            map_index=t.map_index,
            requester=ext.requester,
            triggered_by=ext.triggered_by,
            connection=ext.connection,
            command_sha256=ext.command_sha256,
            statement_count=len(ext.statements),
            summary=summarize([s.script for s in ext.statements], ext.command_sha256),
            justification=ext.justification,
            link=approvals_link(base_url, t.dag_id, t.run_id, t.task_id, t.map_index),
            wait_deadline=wait_deadline,
            decision=decision,
            sent_at=datetime.now(timezone.utc),
        )

    @property
    def subject(self) -> str:
        """A one-line title (safe as a mail subject)."""
        where = f"{self.dag_id}.{self.task_id}"
        if self.kind == "review.requested":
            head = f"Approval requested: {where}"
        elif self.kind == "review.reminder":
            head = f"Reminder, approval still pending: {where}"
        elif self.decision is not None:
            glass = "BREAK-GLASS " if self.decision.break_glass else ""
            head = (
                f"{glass}Review {self.decision.decision.lower()} by "
                f"{self.decision.approver}: {where}"
            )
        else:
            head = f"Review {self.status.lower()}: {where}"
        return one_line(f"{head} (run {self.run_id})")

    @property
    def text(self) -> str:
        """A plain-text body: who asks what, the summary, and where to decide."""
        lines = [
            self.subject,
            "",
            f"DAG run: {self.dag_id} / {self.run_id}",
            f"Task: {self.task_id}" + (f" [{self.map_index}]" if self.map_index >= 0 else ""),
            f"Requested by step: {self.requester}",
        ]
        if self.triggered_by:
            lines.append(f"Run triggered by: {self.triggered_by}")
        lines.append(f"Connection: {self.connection} ({self.statement_count} statement(s))")
        if self.justification:
            lines.append(f"Justification (from the DAG): {self.justification}")
        if self.wait_deadline is not None and self.kind != "review.decided":
            lines.append(f"The task stops waiting at {self.wait_deadline.isoformat()}")
        if self.decision is not None:
            d = self.decision
            lines.append(
                (
                    "BREAK-GLASS (approved alone, outside the review groups) "
                    if d.break_glass
                    else ""
                )
                + f"Decision: {d.decision} by {d.approver} via {d.channel} at "
                f"{d.time.isoformat()}: {d.reason or 'no reason given'}"
            )
        lines += ["", "Command (literals replaced by $n):", self.summary, ""]
        if self.kind != "review.decided":
            lines.append(
                "Decide in the Airflow UI (log in; this message cannot approve): "
                + (self.link or "the Approvals page")
            )
        elif self.link:
            lines.append(f"Review: {self.link}")
        lines.append(f"Review id: {self.review_id}")
        return "\n".join(lines)

    @property
    def html(self) -> str:
        """The plain-text body as escaped HTML (a DAG author's text is never markup)."""
        body = html.escape(self.text).replace("\n", "<br>\n")
        if self.link:
            href = html.escape(self.link, quote=True)
            body += f'<br>\n<a href="{href}">Open the Approvals tab</a>'
        return f"<p>{body}</p>"
