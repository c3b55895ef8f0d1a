"""Reviews: hoop's approval state machine, and the gateway's enforcement of approvals.

A review binds one command (its statements' digests, in order) to one step: a task instance
of one DAG run (dag, task, run, map index) and, when known, its try. The gateway runs a
command that a rule marks for approval only when such a review is APPROVED, unexpired and not
used yet, and it uses it (once) as it accepts each statement. Everything else is refused and
recorded: no review, a changed command, another run, a pending, rejected, expired or used
approval. Decisions follow hoop's ``PUT /api/reviews/{id}`` rules, plus separation of duties:
the requesting step never decides, nor (unless the rule allows it) the user who triggered
the run. See docs/approvals.md.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatchcase
from typing import Any

from airflow_hoop.errors import BadRequestError, HoopError, LedgerError, PolicyRefusedError
from airflow_hoop.gateway.access.auth import ApiKeyPrincipal, Principal, StepPrincipal
from airflow_hoop.gateway.access.policy import check_exec
from airflow_hoop.gateway.approvals.store import ReviewRow, ReviewStore, StoredStatement
from airflow_hoop.gateway.db.store import Appended, GatewayStore
from airflow_hoop.gateway.execution.readonly import is_read_only, is_transaction_control
from airflow_hoop.gateway.settings import ApprovalRule, GatewaySettings
from airflow_hoop.ledger.canonical import sha256_hex
from airflow_hoop.ledger.commands import command_sha256, parameters_sha256, statement_sha256
from airflow_hoop.ledger.records import (
    PolicyRefused,
    RecordBody,
    ReviewDecided,
    ReviewExecuted,
    ReviewRequested,
    ReviewTarget,
    StepRef,
)
from airflow_hoop.wire.reviews import (
    DecisionRecord,
    Review,
    ReviewCreate,
    ReviewCreated,
    ReviewDecisionRequest,
    ReviewedBy,
    ReviewExtension,
    ReviewGroup,
)
from airflow_hoop.wire.sessions import ExecRequest

log = logging.getLogger(__name__)

POLL_TOKEN_PREFIX = "hrt_"
_FIX_MISSING = (
    "put HoopApprovalSensor(target_task_id=...) upstream of the task, or set "
    "requires_approval=True on its operator, and have the exact command approved"
)


class ReviewNotFound(HoopError):
    """No review with that id or session id (404)."""

    link = "gateway review"
    default_fix = "use the review id or session id returned when the review was requested"


class ReviewConflict(HoopError):
    """The review is in a state that does not allow this (hoop answers 400)."""

    link = "gateway review"
    default_fix = "read the review (GET /api/reviews/{id}) and act on its current state"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _step_of(target: ReviewTarget, try_number: int | None = None) -> StepRef:
    return StepRef(
        dag_id=target.dag_id,
        task_id=target.task_id,
        run_id=target.run_id,
        map_index=target.map_index,
        try_number=try_number or target.try_number or 1,
    )


def _same_task_instance(step: StepRef, target: ReviewTarget) -> bool:
    return (step.dag_id, step.task_id, step.run_id, step.map_index) == (
        target.dag_id,
        target.task_id,
        target.run_id,
        target.map_index,
    )


class ReviewService:
    """Requests, decisions, reads and the exec-path check; stateless apart from the database."""

    def __init__(self, settings: GatewaySettings, store: GatewayStore) -> None:
        self.settings = settings
        self.store = store
        self.rows = ReviewStore(store)

    # -- policy ------------------------------------------------------------------------------
    @staticmethod
    def rule_for(target: Any, dag_id: str) -> ApprovalRule | None:
        """The first approval rule of the connection that covers the DAG."""
        rules: list[ApprovalRule] = getattr(target, "approvals", []) or []
        return next((r for r in rules if any(fnmatchcase(dag_id, p) for p in r.dags)), None)

    def needs_approval(self, target: Any, dag_id: str, script: str) -> ApprovalRule | None:
        """The rule that makes this statement need an approval, or None."""
        rule = self.rule_for(target, dag_id)
        if rule is None or is_transaction_control(script):
            return None
        if rule.required_for == "all":
            return rule
        is_sql = getattr(target, "type", "postgres") == "postgres"
        return None if is_sql and is_read_only(script) else rule

    # -- the exec path -----------------------------------------------------------------------
    async def require_approval(
        self, step: StepRef, target: Any, request: ExecRequest, wire_parameters: Any
    ) -> Appended | None:
        """Called before a statement runs: use an approval for it, or refuse (and record).

        Returns None when no rule asks for an approval, else where the ``review.executed``
        record landed. Raises PolicyRefusedError (403), after recording the refusal.
        """
        rule = self.needs_approval(target, step.dag_id, request.script)
        if rule is None:
            return None
        digest = statement_sha256(request.script, parameters_sha256(wire_parameters))
        as_target = ReviewTarget(
            dag_id=step.dag_id,
            task_id=step.task_id,
            run_id=step.run_id,
            map_index=step.map_index,
        )
        now = _now()

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
        await self._record_refusal(
            step, step.key, target.name, f"approval required: {reason}", request.script
        )
        raise PolicyRefusedError(
            f"step {step.key} needs an approval (rule {rule.name or 'of ' + target.name}, "
            f"groups {', '.join(rule.groups)}) to run this command on {target.name}: {reason}",
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

    # -- requests ----------------------------------------------------------------------------
    async def request(self, step: StepRef, body: ReviewCreate) -> ReviewCreated:
        """A step asks for an approval of a command of a step of its own DAG run."""
        target_conn = self.settings.connection(body.connection)
        if target_conn is None:
            raise ReviewNotFound(
                f"connection {body.connection[:200]} not found", "name a gateway connection"
            )
        refusal = check_exec(step, target_conn, {})  # type: ignore[arg-type]
        if refusal is not None:
            await self._record_refusal(step, step.key, target_conn.name, refusal.reason, None)
            raise PolicyRefusedError(refusal.reason, "allow the DAG on the connection first")
        rule = self.rule_for(target_conn, step.dag_id)
        if rule is None:
            reason = f"no approval rule of connection {target_conn.name} covers DAG {step.dag_id}"
            await self._record_refusal(step, step.key, target_conn.name, reason, None)
            raise PolicyRefusedError(
                f"{reason}, so nobody could decide this review",
                f"add an approvals rule (groups, dags) to connection {target_conn.name!r} "
                "in the gateway settings",
            )
        statements = _statements(body, self.settings.max_script_bytes)
        for statement in statements:
            statement.needs_approval = (
                self.needs_approval(target_conn, step.dag_id, statement.script) is not None
            )
        digest = command_sha256([s.sha256 for s in statements])
        if digest != body.command_sha256:
            raise BadRequestError(
                f"command_sha256 {body.command_sha256[:16]}… does not match the statements "
                f"sent (gateway computed {digest[:16]}…)",
                "compute it with airflow_hoop.ledger.commands over the statements as sent",
            )
        target = ReviewTarget(
            dag_id=step.dag_id,
            task_id=body.target_task_id,
            run_id=step.run_id,
            map_index=body.target_map_index,
            try_number=body.target_try_number,
        )
        token = POLL_TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_digest = sha256_hex(token)
        existing = await self.rows.find_open(target, target_conn.name, digest)
        if existing is not None:
            await self.rows.add_poll_token(existing.id, token_digest)
            return ReviewCreated(review=to_review(existing), created=False, poll_token=token)
        now = _now()
        row = ReviewRow(
            id=uuid.uuid4(),
            session_id=uuid.uuid4(),
            connection=target_conn.name,
            dag_id=target.dag_id,
            task_id=target.task_id,
            run_id=target.run_id,
            map_index=target.map_index,
            try_number=target.try_number,
            requester=step.key,
            requester_step=step,
            triggered_by=step.triggered_by,
            status="PENDING",
            command_sha256=digest,
            statements=statements,
            justification=body.justification,
            context=body.context,
            rule=rule.name,
            review_groups=[ReviewGroup(id=str(uuid.uuid4()), group=g) for g in rule.groups],
            min_approvals=min(rule.min_approvals, len(rule.groups)),
            expires_after_seconds=rule.expires_after_seconds,
            triggerer_may_approve=rule.triggerer_may_approve,
            poll_token_sha256=[token_digest],
            created_at=now,
        )
        record = ReviewRequested(
            review_id=str(row.id),
            session_id=str(row.session_id),
            connection=row.connection,
            target=target,
            command_sha256=digest,
            statements=[
                s.model_dump(include={"script", "parameters_sha256", "sha256", "needs_approval"})  # type: ignore[misc]
                for s in statements
            ],
            justification=row.justification,
            triggered_by=row.triggered_by,
            groups=list(rule.groups),
            min_approvals=row.min_approvals,
            expires_after_seconds=row.expires_after_seconds,
            rule=rule.name,
        )
        appended = await self.rows.insert(row, step.key, record)
        review = to_review(row)
        assert review.airflow_hoop is not None
        review.airflow_hoop.request_seq = appended.seq
        return ReviewCreated(review=review, created=True, poll_token=token)

    # -- decisions ---------------------------------------------------------------------------
    async def decide(self, caller: Principal, id_: str, body: ReviewDecisionRequest) -> Review:
        """hoop's ``PUT /api/reviews/{id}``, with our separation-of-duties rules."""
        row = await self._get_row(id_)
        reason = body.reason
        if body.status in ("REJECTED", "REVOKED") and not reason:
            raise BadRequestError(
                "a rejection needs a reason", "send rejection_reason (or airflow_hoop.reason)"
            )
        if isinstance(caller, StepPrincipal):
            step = caller.step
            if step.key == row.requester or _same_task_instance(step, row.target):
                await self._record_refusal(
                    row.requester_step,
                    step.key,
                    row.connection,
                    f"self-approval refused: step {step.key} tried to decide review {row.id}",
                    None,
                )
                raise ReviewConflict(
                    "unable to self approve review",
                    "a review is decided by a person of its review groups, never by a step",
                )
            raise PolicyRefusedError(
                "steps may not decide reviews", "decide from the Airflow UI or with an approver key"
            )
        if caller.role not in ("approver", "admin"):
            raise PolicyRefusedError(
                f"API key {caller.key_name} ({caller.role}) may not decide reviews",
                "use a key with role approver",
            )
        approver, channel = _approver(caller, body)
        credential = caller.name

        async def change(current: ReviewRow) -> tuple[ReviewRow, StepRef | None, str, RecordBody]:
            return self._apply(current, caller, approver, channel, credential, body, reason)

        try:
            new, appended = await self.rows.mutate(row.id, change, "record the review decision")
        except _Refused as refused:
            await self._record_refusal(
                row.requester_step, refused.actor, row.connection, refused.reason, None
            )
            raise refused.error from None
        review = to_review(new)
        assert review.airflow_hoop is not None
        review.airflow_hoop.decisions[-1].ledger_seq = appended.seq
        return review

    def _apply(
        self,
        row: ReviewRow,
        caller: ApiKeyPrincipal,
        approver: str,
        channel: str,
        credential: str,
        body: ReviewDecisionRequest,
        reason: str | None,
    ) -> tuple[ReviewRow, StepRef | None, str, RecordBody]:
        now = _now()
        actor = f"{channel}:{approver} ({credential})"
        decision = body.status
        expected = body.airflow_hoop.command_sha256 if body.airflow_hoop else None
        if expected is not None and expected != row.command_sha256:
            raise _Refused(
                actor,
                f"decision for another command refused: {approver} was shown command "
                f"{expected[:16]}…, review {row.id} is for {row.command_sha256[:16]}…",
                ReviewConflict(
                    "the command digest you decided on is not this review's command",
                    "reload the review: its command is not the one you were shown",
                ),
            )
        allowed = {"PENDING": {"APPROVED", "REJECTED"}, "APPROVED": {"REJECTED", "REVOKED"}}
        if decision not in allowed.get(row.status, set()) or (
            row.status == "APPROVED" and row.used_count > 0
        ):
            raise ReviewConflict(f"review is in wrong state ({row.status}) for {decision}")
        if decision == "APPROVED" and row.expired(now):
            raise ReviewConflict("the review expired")
        if approver in (row.requester, row.requester_step.key):
            raise _Refused(
                actor,
                f"self-approval refused: {approver} requested review {row.id}",
                ReviewConflict("unable to self approve review"),
            )
        if (
            decision == "APPROVED"
            and row.triggered_by
            and approver == row.triggered_by
            and not row.triggerer_may_approve
        ):
            raise _Refused(
                actor,
                f"self-approval refused: {approver} triggered run {row.run_id} of review {row.id}",
                PolicyRefusedError(
                    f"{approver} triggered DAG run {row.run_id} and may not approve its reviews",
                    "ask another member of the review groups, or set triggerer_may_approve "
                    "on the approval rule",
                ),
            )
        if decision == "APPROVED" and any(
            d.approver == approver and d.decision == "APPROVED" for d in row.decisions
        ):
            raise ReviewConflict(f"{approver} already approved this review")
        groups = [g.model_copy() for g in row.review_groups]
        eligible = [
            g
            for g in groups
            if g.status == "PENDING" and (caller.role == "admin" or g.group in caller.groups)
        ]
        if not eligible and decision == "APPROVED":
            raise _Refused(
                actor,
                f"not eligible: {credential} is in none of the pending groups "
                f"{[g.group for g in groups if g.status == 'PENDING']} of review {row.id}",
                ReviewConflict("not eligible for review", "ask a member of the review groups"),
            )
        if (
            not eligible
            and caller.role != "admin"
            and not set(caller.groups) & {g.group for g in groups}
        ):
            raise _Refused(
                actor,
                f"not eligible: {credential} is in none of the groups of review {row.id}",
                ReviewConflict("not eligible for review", "ask a member of the review groups"),
            )
        entry = eligible[0] if eligible else None
        if entry is not None:
            entry.status = decision
            entry.review_date = now
            entry.reviewed_by = ReviewedBy(id=approver, name=approver)
        update: dict[str, Any] = {"review_groups": groups, "decided_at": now}
        if decision == "APPROVED":
            approved = sum(1 for g in groups if g.status == "APPROVED")
            if approved >= row.min_approvals:
                update["status"] = "APPROVED"
                update["expires_at"] = now + timedelta(seconds=row.expires_after_seconds)
        else:
            update["status"] = decision
            update["rejection_reason"] = reason
        record = DecisionRecord(
            decision=decision,
            group=entry.group if entry else None,
            approver=approver,
            credential=credential,
            channel=channel,  # type: ignore[arg-type]
            reason=reason,
            time=now,
        )
        update["decisions"] = [*row.decisions, record]
        new = row.model_copy(update=update)
        body_record = ReviewDecided(
            review_id=str(row.id),
            connection=row.connection,
            command_sha256=row.command_sha256,
            decision=decision,
            status=new.status,
            group=record.group,
            approver=approver,
            credential=credential,
            channel=channel,  # type: ignore[arg-type]
            reason=reason,
            expires_at=new.expires_at,
        )
        return new, row.requester_step, actor, body_record

    # -- reads -------------------------------------------------------------------------------
    async def get(self, caller: Principal, id_: str) -> Review:
        row = await self._get_row(id_)
        if isinstance(caller, StepPrincipal) and not _same_run(caller.step, row):
            raise ReviewNotFound("resource not found")
        return to_review(row)

    async def search(
        self,
        caller: Principal,
        *,
        status: list[str] | None,
        dag_id: str | None,
        run_id: str | None,
        task_id: str | None,
        limit: int,
    ) -> list[Review]:
        if isinstance(caller, StepPrincipal):  # a step sees its own run's reviews only
            dag_id, run_id = caller.step.dag_id, caller.step.run_id
        rows = await self.rows.search(
            status=status, dag_id=dag_id, run_id=run_id, task_id=task_id, limit=limit
        )
        return [to_review(r) for r in rows]

    async def poll(self, id_: str, token: str) -> Review:
        """The review, for the holder of one of its poll tokens (the deferred sensor)."""
        row = await self._get_row(id_)
        digest = sha256_hex(token)
        if not any(hmac.compare_digest(digest, known) for known in row.poll_token_sha256):
            raise ReviewNotFound("resource not found")
        return to_review(row)

    async def _get_row(self, id_: str) -> ReviewRow:
        try:
            key = uuid.UUID(id_)
        except ValueError:
            raise ReviewNotFound("resource not found") from None
        row = await self.rows.get(key)
        if row is None:
            raise ReviewNotFound("resource not found")
        return row

    async def _record_refusal(
        self, step: StepRef | None, actor: str, connection: str, reason: str, script: str | None
    ) -> None:
        body = PolicyRefused(
            connection=connection,
            reason=reason,
            script_sha256=None if script is None else sha256_hex(script),
        )
        try:
            await self.store.append(step, actor, body)
        except LedgerError as exc:
            # The refusal stands (fail closed); only its record is missing.
            log.error("refusal not recorded: %s", exc)


class _Refused(Exception):
    """A refusal computed inside the row lock; recorded after the transaction is rolled back."""

    def __init__(self, actor: str, reason: str, error: HoopError) -> None:
        super().__init__(reason)
        self.actor = actor
        self.reason = reason
        self.error = error


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


def _same_run(step: StepRef, row: ReviewRow) -> bool:
    return step.dag_id == row.dag_id and step.run_id == row.run_id


def _approver(caller: ApiKeyPrincipal, body: ReviewDecisionRequest) -> tuple[str, str]:
    asserted = (body.airflow_hoop.reviewed_by or "").strip() if body.airflow_hoop else ""
    if caller.asserts_users:
        if not asserted:
            raise BadRequestError(
                f"API key {caller.key_name} decides for users but named none",
                "send airflow_hoop.reviewed_by (the Airflow user who decided)",
            )
        return asserted, "airflow-ui"
    if asserted:
        raise PolicyRefusedError(
            f"API key {caller.key_name} may not decide in the name of {asserted[:100]!r}",
            "decide as the key itself, or use the UI's key (asserts_users)",
        )
    return caller.name, "gateway-api"


def _statements(body: ReviewCreate, max_script_bytes: int) -> list[StoredStatement]:
    out = []
    for index, statement in enumerate(body.statements):
        script = statement.script
        if "\x00" in script:
            raise BadRequestError(f"statement {index + 1} contains a NUL character")
        if len(script.encode("utf-8", "surrogatepass")) > max_script_bytes:
            raise BadRequestError(
                f"statement {index + 1} is longer than max_script_bytes ({max_script_bytes})"
            )
        params_digest = parameters_sha256(statement.parameters)
        out.append(
            StoredStatement(
                script=script,
                parameters=statement.parameters,
                parameters_sha256=params_digest,
                sha256=statement_sha256(script, params_digest),
            )
        )
    return out


def to_review(row: ReviewRow, now: datetime | None = None) -> Review:
    """hoop's Review JSON of a row, with our extension."""
    now = now or _now()
    return Review(
        id=str(row.id),
        session=str(row.session_id),
        status=row.status,
        created_at=row.created_at,
        review_groups_data=row.review_groups,
        access_request_rule_name=row.rule,
        min_approvals=row.min_approvals,
        rejection_reason=row.rejection_reason,
        revoke_at=row.expires_at,
        airflow_hoop=ReviewExtension(
            connection=row.connection,
            target=row.target,
            requester=row.requester,
            triggered_by=row.triggered_by,
            justification=row.justification,
            command_sha256=row.command_sha256,
            statements=[
                s.model_dump(include={"script", "parameters_sha256", "sha256", "needs_approval"})  # type: ignore[misc]
                for s in row.statements
            ],
            parameters=[s.parameters for s in row.statements],
            context=row.context,
            expires_after_seconds=row.expires_after_seconds,
            expires_at=row.expires_at,
            expired=row.status == "APPROVED" and row.expired(now),
            used_count=row.used_count,
            executed_try=row.executed_try,
            decisions=row.decisions,
        ),
    )
