"""Reviews: hoop's approval state machine (requests, decisions, reads).

A step requests a review of one command for a step of its own DAG run; people of the rule's
review groups decide it. Decisions follow hoop's ``PUT /api/reviews/{id}`` rules, plus
separation of duties: the requesting step never decides, nor (unless the rule allows it) the
user who triggered the run. The exec path uses approved reviews in ``gate.py``. See
docs/approvals.md.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from datetime import timedelta
from typing import Any

from airflow_hoop.errors import BadRequestError, HoopError, PolicyRefusedError
from airflow_hoop.gateway.access.auth import ApiKeyPrincipal, Principal, StepPrincipal
from airflow_hoop.gateway.access.policy import check_exec, record_refusal
from airflow_hoop.gateway.approvals.gate import needs_approval, rule_for
from airflow_hoop.gateway.approvals.notifier import ReviewNotifier
from airflow_hoop.gateway.approvals.rules import forced_entry, regroup
from airflow_hoop.gateway.approvals.store import ReviewRow, ReviewStore, utc_now
from airflow_hoop.gateway.approvals.wire import recorded, stored_statements, to_review
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.gateway.settings import GatewaySettings
from airflow_hoop.gateway.targets import target_for
from airflow_hoop.ledger.canonical import sha256_hex
from airflow_hoop.ledger.commands import command_sha256
from airflow_hoop.ledger.records import (
    RecordBody,
    ReviewDecided,
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
    ReviewGroup,
)

POLL_TOKEN_PREFIX = "hrt_"


class ReviewNotFound(HoopError):
    """No review with that id or session id (404)."""

    link = "gateway review"
    default_fix = "use the review id or session id returned when the review was requested"


class ReviewConflict(HoopError):
    """The review is in a state that does not allow this (hoop answers 400)."""

    link = "gateway review"
    default_fix = "read the review (GET /api/reviews/{id}) and act on its current state"


def same_task_instance(step: StepRef, target: ReviewTarget) -> bool:
    """Is ``step`` a try of the task instance a review is for?"""
    return (step.dag_id, step.task_id, step.run_id, step.map_index) == (
        target.dag_id,
        target.task_id,
        target.run_id,
        target.map_index,
    )


class ReviewService:
    """Requests, decisions and reads; stateless apart from the database."""

    def __init__(
        self,
        settings: GatewaySettings,
        store: GatewayStore,
        notifier: ReviewNotifier | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.rows = ReviewStore(store)
        #: Approval notifications (webhook): told after each commit, never awaited.
        self.notifier = notifier

    # -- requests ----------------------------------------------------------------------------
    async def request(self, step: StepRef, body: ReviewCreate) -> ReviewCreated:
        """A step asks for an approval of a command of a step of its own DAG run."""
        target_conn = target_for(self.settings, body.connection)
        if target_conn is None:
            raise ReviewNotFound(
                f"connection {body.connection[:200]} not found", "name a gateway connection"
            )
        refusal = check_exec(step, target_conn.connection, {})
        if refusal is not None:
            await record_refusal(self.store, step, step.key, target_conn.name, refusal.reason, None)
            raise PolicyRefusedError(refusal.reason, "allow the DAG on the connection first")
        rule = rule_for(target_conn, step.dag_id)
        if rule is None:
            reason = f"no approval rule of connection {target_conn.name} covers DAG {step.dag_id}"
            await record_refusal(self.store, step, step.key, target_conn.name, reason, None)
            raise PolicyRefusedError(
                f"{reason}, so nobody could decide this review",
                f"add an approvals rule (groups, dags) to connection {target_conn.name!r} "
                "in the gateway settings",
            )
        statements = stored_statements(body, self.settings.max_script_bytes)
        for statement in statements:
            statement.needs_approval = (
                needs_approval(
                    target_conn, step.dag_id, statement.script, statement.parameters is not None
                )
                is not None
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
        now = utc_now()
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
            review_groups=[
                ReviewGroup(id=str(uuid.uuid4()), group=n.group, min_approvals=n.min_approvals)
                for n in rule.needs
            ],
            min_approvals=rule.groups_needed,
            force_approval_groups=list(rule.break_glass_groups),
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
            statements=recorded(statements),
            justification=row.justification,
            triggered_by=row.triggered_by,
            groups=rule.group_names,
            min_approvals=row.min_approvals,
            expires_after_seconds=row.expires_after_seconds,
            rule=rule.name,
            group_min_approvals={n.group: n.min_approvals for n in rule.needs}
            if any(n.min_approvals > 1 for n in rule.needs)
            else None,
            break_glass_groups=list(rule.break_glass_groups) or None,
        )
        appended = await self.rows.insert(row, step.key, record)
        if self.notifier is not None:
            self.notifier.requested(row, body.wait_deadline)
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
            if step.key == row.requester or same_task_instance(step, row.target):
                await record_refusal(
                    self.store,
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
            await record_refusal(
                self.store, row.requester_step, refused.actor, row.connection, refused.reason, None
            )
            raise refused.error from None
        if self.notifier is not None:
            self.notifier.decided(new)
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
        now = utc_now()
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
        force = body.force_review
        review_groups = [g.group for g in row.review_groups if not g.forced_review]
        mine = [g for g in review_groups if caller.role == "admin" or g in caller.groups]
        glass = [g for g in row.force_approval_groups if g in caller.groups]
        if force and (decision != "APPROVED" or not glass):
            raise _Refused(
                actor,
                f"break-glass refused: {credential} is in none of the break-glass groups "
                f"{row.force_approval_groups} of review {row.id}"
                if decision == "APPROVED"
                else f"break-glass refused: force_review with {decision} on review {row.id}",
                ReviewConflict(
                    "not eligible for a break-glass approval",
                    "only members of the rule's break_glass_groups may force an approval",
                ),
            )
        if not force and not mine and (decision == "APPROVED" or not glass):
            # A break-glass member approves only with force_review, so it is always flagged.
            raise _Refused(
                actor,
                f"not eligible: {credential} is in none of the groups {review_groups} "
                f"of review {row.id}",
                ReviewConflict(
                    "not eligible for review",
                    "ask a member of the review groups (break-glass members: send force_review)",
                ),
            )
        record = DecisionRecord(
            decision=decision,
            group=glass[0] if force else (mine[0] if mine else glass[0]),
            groups=glass if force else mine,
            approver=approver,
            credential=credential,
            channel=channel,  # type: ignore[arg-type]
            reason=reason,
            time=now,
            break_glass=force,
        )
        decisions = [*row.decisions, record]
        update: dict[str, Any] = {"decided_at": now, "decisions": decisions}
        if decision == "APPROVED":
            groups, outcome = regroup(row.review_groups, row.min_approvals, decisions)
            if force:
                groups.append(forced_entry(record))
            seated = [g for g, people in outcome.seats.items() if approver in people]
            record.group = glass[0] if force else (seated or mine)[0]
            if force or outcome.approved:
                update["status"] = "APPROVED"
                update["expires_at"] = now + timedelta(seconds=row.expires_after_seconds)
        else:
            groups = [g.model_copy() for g in row.review_groups]
            for entry in groups:
                if entry.group == record.group and entry.status == "PENDING":
                    entry.status = decision
                    entry.review_date = now
                    entry.reviewed_by = ReviewedBy(id=approver, name=approver)
            update["status"] = decision
            update["rejection_reason"] = reason
        update["review_groups"] = groups
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
            break_glass=True if force else None,
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


class _Refused(Exception):
    """A refusal computed inside the row lock; recorded after the transaction is rolled back."""

    def __init__(self, actor: str, reason: str, error: HoopError) -> None:
        super().__init__(reason)
        self.actor = actor
        self.reason = reason
        self.error = error


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
    # A key held by a person decides as that person: one vote, whichever channel they use.
    return caller.person or caller.name, "gateway-api"
