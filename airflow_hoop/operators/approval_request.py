"""Asking the gateway for an approval from a task, and waiting for it without a worker slot.

Shared by ``HoopApprovalSensor`` (approval of another task of the run) and the operators'
``requires_approval=True`` (approval of their own command). The command is rendered exactly as
the target will send it (statement by statement, with its bound parameters), so that the
gateway can bind the approval to its digest; any later change is refused by the gateway.

Operators that run something else than SQL provide ``approval_command(context)`` returning an
``ApprovalCommand`` (e.g. one statement holding the shell script); see ``command_for``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, NoReturn

from pydantic import BaseModel

from airflow_hoop.defaults import DEFAULT_POLL_INTERVAL
from airflow_hoop.errors import ConfigError, HoopError
from airflow_hoop.hooks.hoop import HoopHook
from airflow_hoop.ledger.commands import command_sha256, parameters_sha256, statement_sha256
from airflow_hoop.task.step_session import end_all_steps
from airflow_hoop.triggers.review import ReviewTrigger
from airflow_hoop.wire.reviews import Review, ReviewCreate, ReviewCreated, StatementIn
from airflow_hoop.wire.values import encode_parameters

log = logging.getLogger(__name__)


class ApprovalRejected(HoopError):
    """The review was rejected, revoked, expired or could not be read: the step does not run."""

    link = "approval"
    default_fix = "ask for a new approval (clear the task) if the command should still run"


class ApprovalCommand(BaseModel):
    """What a step will run on a gateway connection, statement by statement."""

    connection: str
    statements: list[StatementIn]
    hoop_conn_id: str | None = None

    @property
    def command_sha256(self) -> str:
        return command_sha256(
            [statement_sha256(s.script, parameters_sha256(s.parameters)) for s in self.statements]
        )

    @classmethod
    def of(
        cls,
        connection: str,
        scripts: Sequence[str],
        parameters: Any = None,
        hoop_conn_id: str | None = None,
    ) -> ApprovalCommand:
        """Each script with the same parameters, encoded as the DB-API cursor sends them."""
        wire = encode_parameters(parameters) if parameters else None
        return cls(
            connection=connection,
            statements=[StatementIn(script=s, parameters=wire) for s in scripts],
            hoop_conn_id=hoop_conn_id,
        )


def sql_command(task: Any) -> ApprovalCommand:
    """The statements a (rendered) ``SQLExecuteQueryOperator`` on a gateway connection sends.

    Mirrors ``DbApiHook.run``: a string is split with the hook's own splitter when
    ``split_statements`` is set, every statement gets the same parameters, and empty
    parameters are not sent at all. COMMIT needs no approval (the gateway exempts it).
    """
    from airflow_hoop.hooks.postgres import HoopPostgresHook

    hook = task.get_db_hook()
    if not isinstance(hook, HoopPostgresHook):
        raise ConfigError(
            f"task {task.task_id} does not run through the gateway (its hook is "
            f"{type(hook).__name__}), so the gateway could not enforce an approval",
            "give the task a 'hoop_postgres' connection (or use HoopPostgresOperator)",
        )
    sql = task.sql
    if isinstance(sql, str):
        if task.split_statements:
            scripts = hook.split_sql_string(sql, strip_semicolon=hook.strip_semicolon)
        else:
            scripts = [sql] if sql.strip() else []
    else:
        scripts = list(sql)
    if not scripts:
        raise ConfigError(f"task {task.task_id} has no SQL to approve", "give it its sql")
    conn_id = hook.hoop_conn_id or hook.connection.extra_dejson.get("hoop_conn_id")
    return ApprovalCommand.of(hook._target(), scripts, task.parameters, conn_id)


def command_for(task: Any, context: Mapping[str, Any]) -> ApprovalCommand:
    """The command of a rendered task: its own ``approval_command(context)``, or its SQL."""
    own = getattr(task, "approval_command", None)
    if callable(own):
        command = own(context)
        if not isinstance(command, ApprovalCommand):
            raise ConfigError(
                f"{type(task).__name__}.approval_command() must return ApprovalCommand"
            )
        return command
    from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator

    if isinstance(task, SQLExecuteQueryOperator):
        return sql_command(task)
    raise ConfigError(
        f"task {task.task_id} ({type(task).__name__}) runs nothing through the gateway",
        "point the approval at a HoopPostgresOperator, a SQL operator on a 'hoop_postgres' "
        "connection, or an operator with approval_command()",
    )


def request_approval(
    context: Mapping[str, Any],
    command: ApprovalCommand,
    *,
    target_task_id: str,
    target_map_index: int = -1,
    target_try_number: int | None = None,
    justification: str = "",
    hoop_conn_id: str | None = None,
    wait_deadline: datetime | None = None,
    context_extra: Mapping[str, str] | None = None,
) -> tuple[ReviewCreated, GatewayAddress]:
    """Ask as the running step; returns the review (new or already open) and where the
    gateway is (for the trigger that waits).

    ``context_extra``: more of the review's context (e.g. ``AGENT_TOOL_CALL``: a paused agent).
    """
    hook = HoopHook(hoop_conn_id or command.hoop_conn_id or HoopHook.default_conn_name)
    step = hook.get_step(context)
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", "")
    extra = {
        "requested_by_task": str(step.step.task_id),
        "run_type": str(getattr(run_type, "value", run_type) or ""),
        "logical_date": str(getattr(dag_run, "logical_date", "") or ""),
        **(context_extra or {}),
    }
    body = ReviewCreate(
        connection=command.connection,
        target_task_id=target_task_id,
        target_map_index=target_map_index,
        target_try_number=target_try_number,
        statements=command.statements,
        command_sha256=command.command_sha256,
        justification=justification or "",
        context={k: v[:500] for k, v in extra.items() if v},
        wait_deadline=wait_deadline,
    )
    try:
        created = step.client.request_review(body)
    finally:
        end_all_steps()  # nothing of the requesting step outlives the request
    review = created.review
    log.info(
        "review %s (%s) %s for task %s: command %s on %s, %d statement(s)",
        review.id,
        review.status,
        "requested" if created.created else "already open",
        target_task_id,
        command.command_sha256[:16],
        command.connection,
        len(command.statements),
    )
    return created, GatewayAddress(step.config.gateway_url, step.config.ca_file)


class GatewayAddress(NamedTuple):
    """Where the step's gateway is, and the private CA its certificate is signed by (if any)."""

    url: str
    ca_file: str | None = None


def trigger_for(
    created: ReviewCreated,
    gateway: GatewayAddress,
    poll_interval: float,
    *,
    end_task: bool = False,
    remind_at: float | None = None,
    wait_deadline: datetime | None = None,
) -> ReviewTrigger:
    """The trigger that waits for the review; ``end_task``: succeed the task from the trigger;
    ``remind_at``: wake the task then for its notifiers' reminder (docs/notifications.md)."""
    return ReviewTrigger(
        gateway_url=gateway.url,
        ca_file=gateway.ca_file,
        review_id=created.review.id,
        poll_token=created.poll_token,
        poll_interval=poll_interval or DEFAULT_POLL_INTERVAL,
        end_task_on_approval=end_task,
        remind_at=remind_at,
        wait_deadline=None if wait_deadline is None else wait_deadline.isoformat(),
    )


def rewait_trigger(
    event: Mapping[str, Any],
    poll_interval: float,
    *,
    end_task: bool = False,
    wait_deadline: datetime | None = None,
) -> ReviewTrigger:
    """After a reminder event: wait again for the *same* review, with no further reminder.

    Not a new request: had the review been decided between the reminder and now, a request
    would open a second review (and announce it again).
    """
    review = Review.model_validate(event["review"])
    return trigger_for(
        ReviewCreated(review=review, created=False, poll_token=str(event["poll_token"])),
        GatewayAddress(str(event["gateway_url"]), event.get("ca_file")),
        poll_interval,
        end_task=end_task,
        wait_deadline=wait_deadline,
    )


def settled(review: Review) -> str | None:
    """The status that ends a wait, or None while the review is pending."""
    if review.airflow_hoop is not None and review.airflow_hoop.expired:
        return "EXPIRED"
    return None if review.status == "PENDING" else review.status


def outcome(event: Mapping[str, Any]) -> Review:
    """The approved review of a trigger event; raises ApprovalRejected otherwise."""
    status = str(event.get("status"))
    if status == "ERROR" or "review" not in event:
        raise ApprovalRejected(str(event.get("error") or f"no review in trigger event {event}"))
    review = Review.model_validate(event["review"])
    return check(review, status)


def check(review: Review, status: str | None = None) -> Review:
    """Log who decided and why; raise ApprovalRejected unless the review is approved."""
    status = status or settled(review) or review.status
    ext = review.airflow_hoop
    for d in ext.decisions if ext else []:
        log.info("%s", d.describe(review.id))
    if status == "APPROVED":
        return review
    _reject(review, status)


def _reject(review: Review, status: str) -> NoReturn:
    if status in ("REJECTED", "REVOKED"):
        raise ApprovalRejected(
            f"review {review.id} was {status.lower()}: {review.rejection_reason or 'no reason'}",
            "fix what the reviewer asked for, then clear the task to ask again",
        )
    if status == "EXPIRED":
        raise ApprovalRejected(
            f"the approval of review {review.id} expired before the command ran",
            "clear the approval task to ask again",
        )
    raise ApprovalRejected(
        f"review {review.id} is {status}: it cannot approve a new run of the command",
        "clear the approval task to ask for a new approval",
    )
