"""The exec path's approval check: a command a rule marks runs only with an approval to use.

A review binds one command (its statements' digests, in order) to one step: a task instance
of one DAG run (dag, task, run, map index) and, when known, its try. The gateway runs a
command that a rule marks for approval only when such a review is APPROVED, unexpired and not
used yet, and it uses it (once) as it accepts each statement. Everything else is refused and
recorded: no review, a changed command, another run, a pending, rejected, expired or used
approval. See docs/approvals.md.
"""

from __future__ import annotations

from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from airflow_hoop.errors import PolicyRefusedError
from airflow_hoop.gateway.access.policy import record_refusal
from airflow_hoop.gateway.approvals.store import ReviewRow, ReviewStore, StoredStatement, utc_now
from airflow_hoop.gateway.db.appender import Appended
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.gateway.settings import ApprovalRule
from airflow_hoop.gateway.targets import Target
from airflow_hoop.ledger.commands import parameters_sha256, statement_sha256
from airflow_hoop.ledger.records import RecordBody, ReviewExecuted, ReviewTarget, StepRef
from airflow_hoop.ledger.sql_label import ScriptLabel
from airflow_hoop.wire.sessions import ExecRequest

_FIX_MISSING = (
    "put HoopApprovalSensor(target_task_id=...) upstream of the task, or set "
    "requires_approval=True on its operator, and have the exact command approved"
)


def rule_for(target: Target, dag_id: str) -> ApprovalRule | None:
    """The first approval rule of the connection that covers the DAG."""
    return next((r for r in target.approvals if any(fnmatchcase(dag_id, p) for p in r.dags)), None)


def needs_approval(
    target: Target, dag_id: str, script: str, parameterized: bool
) -> ApprovalRule | None:
    """The rule that makes this statement need an approval, or None."""
    return _needs_approval(target, dag_id, target.label(script, parameterized))


def _needs_approval(target: Target, dag_id: str, label: ScriptLabel) -> ApprovalRule | None:
    # Transaction control runs nothing new: no rule asks an approval for it, not even "all".
    rule = rule_for(target, dag_id)
    if rule is None or label.label == "transaction_control":
        return None
    if rule.required_for == "all":
        return rule
    return None if label.label == "read" else rule


def _why_marked(rule: ApprovalRule, label: ScriptLabel, *, quote: bool) -> str:
    """Why the rule marks this command: which statement (``quote``) was a write, and why."""
    if rule.required_for == "all":
        return "the rule asks an approval for every command"
    return label.explain() if quote else f"it was labelled a write: {label.why}"


def unbound_settings_refusal(target: Target, dag_id: str, req: ExecRequest) -> str | None:
    """Why a session setting may not be applied here, or None.

    ``search_path`` changes what an approved command's names resolve to, and an approval binds
    the command's text and parameters, not the session it runs in: where a rule covers the
    DAG, the step could have ``DELETE FROM staging`` approved and run it on another schema's
    table. (A ``SET search_path`` in the SQL is a write under the rule: it needs an approval of
    its own.) The timeouts and the application_name prefix change no statement's meaning.
    """
    settings = req.airflow_hoop.session_settings if req.airflow_hoop else None
    if settings is None or settings.search_path is None:
        return None
    rule = rule_for(target, dag_id)
    if rule is None:
        return None
    return (
        f"search_path cannot be set through options on connection {target.name!r} for DAG "
        f"{dag_id!r}: approval rule {rule.name or '(unnamed)'} covers it, and an approval "
        "does not bind the session's search_path"
    )


def runs_read_only(target: Target, dag_id: str, approval: Appended | None) -> bool:
    """Does this command run where PostgreSQL refuses writes (the step's READ user)?

    Yes for every command that used no approval under a ``required_for: writes`` rule: the
    label only decided that it needs none, so the database must refuse any write in it. An
    approved command, and every command without such a rule, runs read-write as before.
    """
    rule = rule_for(target, dag_id)
    return (
        approval is None
        and target.has_read_mode
        and rule is not None
        and rule.required_for == "writes"
    )


class ApprovalGate:
    """Uses an approval for each statement that needs one, or refuses it (and records why)."""

    def __init__(self, store: GatewayStore) -> None:
        self.store = store
        self.rows = ReviewStore(store)

    async def require_approval(
        self, step: StepRef, target: Target, request: ExecRequest, wire_parameters: Any
    ) -> Appended | None:
        """Called before a statement runs: use an approval for it, or refuse (and record).

        Returns None when no rule asks for an approval, else where the ``review.executed``
        record landed. Raises PolicyRefusedError (403), after recording the refusal.
        """
        parameterized = (
            request.airflow_hoop is not None and request.airflow_hoop.parameters is not None
        )
        label = target.label(request.script, parameterized)
        rule = _needs_approval(target, step.dag_id, label)
        if rule is None:
            return None
        digest = statement_sha256(request.script, parameters_sha256(wire_parameters))
        as_target = ReviewTarget(
            dag_id=step.dag_id,
            task_id=step.task_id,
            run_id=step.run_id,
            map_index=step.map_index,
        )
        now = utc_now()

        def pick(rows: list[ReviewRow]) -> tuple[ReviewRow, StepRef, str, RecordBody] | None:
            for row in rows:
                if _usable(row, step, target.name, digest, now):
                    gated = _gated(row)
                    used_count = row.used_count + 1
                    used = row.model_copy(
                        update={
                            "used_count": used_count,
                            "executed_try": step.try_number,
                            "status": "EXECUTED" if used_count == len(gated) else "PROCESSING",
                        }
                    )
                    body = ReviewExecuted(
                        review_id=str(row.id),
                        connection=row.connection,
                        command_sha256=row.command_sha256,
                        statement_index=gated[row.used_count][0],
                        statement_sha256=digest,
                        try_number=step.try_number,
                        remaining=len(gated) - used_count,
                    )
                    return used, step, step.key, body
            return None

        outcome = await self.rows.use(as_target, pick)
        if not isinstance(outcome, list):
            _used, appended = outcome
            return appended
        reason = await self._why_not(outcome, step, target.name, digest, now)
        # The record names why the command was marked, but not the statement (the refusal
        # records the script by its digest only); the caller, who sent it, sees which one.
        await record_refusal(
            self.store,
            step,
            step.key,
            target.name,
            f"approval required: {reason}; marked because {_why_marked(rule, label, quote=False)}",
            request.script,
        )
        raise PolicyRefusedError(
            f"step {step.key} needs an approval (rule {rule.name or 'of ' + target.name}, "
            f"{rule.describe()}) to run this command on {target.name}: {reason}; "
            f"marked because {_why_marked(rule, label, quote=True)}",
            _FIX_MISSING,
        )

    async def _why_not(
        self, rows: list[ReviewRow], step: StepRef, connection: str, digest: str, now: datetime
    ) -> str:
        mine = [r for r in rows if r.connection == connection]
        holding = [r for r in mine if any(s.sha256 == digest for s in r.statements)]
        if not mine:
            others = await self.rows.others_with_statement(
                step.dag_id, step.task_id, step.run_id, digest
            )
            if others:
                other = others[0]
                return (
                    f"approval {other.id} was given for run {other.run_id}, not for run "
                    f"{step.run_id}: an approval is not valid for another run"
                )
            return "no approval was requested for this step"
        if not holding:
            latest = mine[-1]
            return (
                f"this command differs from the one under review {latest.id} "
                f"(statement digest {digest[:16]}… is not part of approved command "
                f"{latest.command_sha256[:16]}…): a changed command needs a new approval"
            )
        row = holding[-1]
        if row.status == "PENDING":
            return f"review {row.id} is still pending"
        if row.status in ("REJECTED", "REVOKED"):
            why = f": {row.rejection_reason}" if row.rejection_reason else ""
            return f"review {row.id} was {row.status.lower()}{why}"
        if row.try_number is not None and row.try_number != step.try_number:
            return f"approval {row.id} is for try {row.try_number}, this is try {step.try_number}"
        if row.executed_try is not None and row.executed_try != step.try_number:
            return f"approval {row.id} was already used by try {row.executed_try}"
        if row.status == "EXECUTED" or row.used_count >= len(_gated(row)):
            return f"approval {row.id} was already used (an approval is used once)"
        if row.expired(now):
            assert row.expires_at is not None
            return f"approval {row.id} expired at {row.expires_at.isoformat()}"
        index = _gated(row)[row.used_count][0]
        return (
            f"statement out of order: approval {row.id} expects statement "
            f"{index + 1} of {len(row.statements)} next"
        )


def _usable(row: ReviewRow, step: StepRef, connection: str, digest: str, now: datetime) -> bool:
    return (
        row.connection == connection
        and row.status in ("APPROVED", "PROCESSING")
        and not row.expired(now)
        and (row.try_number is None or row.try_number == step.try_number)
        and (row.executed_try is None or row.executed_try == step.try_number)
        and row.used_count < len(_gated(row))
        and _gated(row)[row.used_count][1].sha256 == digest
    )


def _gated(row: ReviewRow) -> list[tuple[int, StoredStatement]]:
    """The statements that need the approval, with their index in the command."""
    return [(i, s) for i, s in enumerate(row.statements) if s.needs_approval]
