"""HoopApprovalSensor: a human approves a sensitive task's exact command before it runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException
from airflow.sdk import BaseSensorOperator

from airflow_hoop.defaults import DEFAULT_POLL_INTERVAL
from airflow_hoop.operators.approval_mixin import notifier_list
from airflow_hoop.operators.step_commitment import StepCommitmentMixin
from airflow_hoop.wire.identity import COMMITMENT_FIELD

# The approval machinery (wire models, trigger, gateway client) is imported when the sensor
# runs, not when its DAG file is parsed (airflow_hoop/defaults.py says why).


class HoopApprovalSensor(StepCommitmentMixin, BaseSensorOperator):
    """Wait until a person approves what ``target_task_id`` will run, without holding a worker.

    Place it upstream of the sensitive task:

        approve = HoopApprovalSensor(
            task_id="approve_load",
            target_task_id="load",
            justification="Monthly payroll load for {{ ds }}",
        )
        approve >> load

    On its first poke the sensor renders the target task's templated fields (its SQL, a
    ``.sql`` file, its parameters) exactly as the target will, and asks the gateway for a
    review bound to the target's task instance in this DAG run and to the digest of that
    command. The reviewer sees the SQL, the connection, the DAG run, who triggered it and the
    (templated) ``justification``. The gateway enforces the decision: the target's command
    runs only with this approval, once, unchanged, in this run; removing the sensor does not
    remove the approval (when a gateway rule asks for one).

    ``deferrable=True`` (the default) frees the worker slot: the wait runs in the triggerer,
    polling every ``poke_interval`` seconds (default 5); on approval the trigger ends the sensor
    with success itself (no worker start). With ``deferrable=False``, ``mode``
    ``poke``/``reschedule`` behave as on any sensor. ``timeout`` fails the sensor (or skips
    it with ``soft_fail``). A rejection fails it without retries, the reason in the log; with
    ``skip_on_reject=True`` it is skipped instead (and so is the target, by trigger rules).

    ``approval_notifiers`` (Airflow notifiers: ``SmtpNotifier``, ``SlackWebhookNotifier``, any)
    are told of the request, of a reminder before ``timeout`` (in every mode: a poking sensor
    claims it from the gateway, once) and of the decision, with a
    masked summary and a link to the Approvals tab (docs/notifications.md). With notifiers, an
    approval resumes the sensor on a worker (to post the decision) instead of ending it in the
    triggerer.
    """

    template_fields: Sequence[str] = ("justification", COMMITMENT_FIELD)
    ui_color = "#fbe3a1"

    def __init__(
        self,
        *,
        target_task_id: str,
        justification: str = "",
        target_map_index: int = -1,
        hoop_conn_id: str | None = None,
        skip_on_reject: bool = False,
        deferrable: bool = True,
        poke_interval: float = DEFAULT_POLL_INTERVAL,
        approval_notifiers: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.target_task_id = target_task_id
        self.justification = justification
        self.target_map_index = target_map_index
        self.hoop_conn_id = hoop_conn_id
        self.skip_on_reject = skip_on_reject
        self.deferrable = deferrable
        self.approval_notifiers = notifier_list(approval_notifiers)

    def execute(self, context: Any) -> Any:
        from airflow_hoop.operators import approval_notify

        if not self.deferrable:
            # When the pokes stop: from the first poke of this try, as Airflow's timeout.
            first = context["ti"].get_first_reschedule_date(context) if self.reschedule else None
            start = first or datetime.now(timezone.utc)
            self._poke_deadline = start + timedelta(seconds=self.timeout)
            return super().execute(context)

        deadline = approval_notify.deadline_in(self.timeout)
        return self._wait(context, deadline, remind=True)

    def poke(self, context: Any) -> bool:
        """Non-deferrable mode: ask (idempotent) and look at the review's state."""
        from airflow_hoop.operators import approval_notify
        from airflow_hoop.operators.approval_request import settled

        deadline = getattr(self, "_poke_deadline", None)
        created, gateway_url = self._request(context, deadline)
        notifiers = approval_notify.notifiers_of(self)
        if created.created:
            approval_notify.notify(notifiers, context, created.review, "review.requested", deadline)
        status = settled(created.review)
        if status is None:
            if deadline is not None:
                approval_notify.remind_if_due(notifiers, context, created, gateway_url, deadline)
            return False
        if status in approval_notify.DECIDED:
            approval_notify.notify(notifiers, context, created.review, "review.decided")
        self._finish(created.review.model_dump(mode="json"), status)
        return True

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
        """Resumed from the trigger: approved → success; otherwise fail (or skip).

        A reminder event sends the notifiers' reminder and waits again.
        """
        from airflow_hoop.operators import approval_notify
        from airflow_hoop.wire.reviews import Review

        notifiers = approval_notify.notifiers_of(self)
        deadline = approval_notify.event_deadline(event)
        if event.get("status") == approval_notify.REMIND and "review" in event:
            review = Review.model_validate(event["review"])
            approval_notify.notify(notifiers, context, review, "review.reminder", deadline)
            return self._rewait(context, event, notifiers, deadline)
        decided = approval_notify.decided_review(event)
        if decided is not None:
            approval_notify.notify(notifiers, context, decided, "review.decided")
        return self._finish(event.get("review"), event.get("status"), event)

    # -- helpers --------------------------------------------------------------------------------
    def _wait(self, context: Any, deadline: Any, *, remind: bool = False) -> Any:
        """Ask (idempotent: the open review, a fresh poll token) and defer unless settled."""
        from datetime import datetime, timezone

        from airflow_hoop.operators import approval_notify
        from airflow_hoop.operators.approval_request import settled, trigger_for

        created, gateway_url = self._request(context, deadline)
        notifiers = approval_notify.notifiers_of(self)
        if created.created:
            approval_notify.notify(notifiers, context, created.review, "review.requested", deadline)
        status = settled(created.review)
        if status is not None:
            if not remind and status in approval_notify.DECIDED:  # decided while reminding
                approval_notify.notify(notifiers, context, created.review, "review.decided")
            return self._finish(created.review.model_dump(mode="json"), status)
        self.log.info(
            "deferring until review %s is decided (poll every %ss)",
            created.review.id,
            self.poke_interval,
        )
        remaining = (deadline - datetime.now(timezone.utc)).total_seconds()
        remind_at = (
            approval_notify.remind_at(created.review.created_at, deadline)
            if remind and notifiers
            else None
        )
        self.defer(
            # With notifiers the sensor resumes on approval, to post the decision.
            trigger=trigger_for(
                created,
                gateway_url,
                self.poke_interval,
                end_task=not notifiers,
                remind_at=remind_at,
                wait_deadline=deadline,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(remaining, 1.0)),
        )

    def _rewait(
        self, context: Any, event: dict[str, Any], notifiers: list[Any], deadline: Any
    ) -> Any:
        """Defer again on the same review (its poll token from the reminder event)."""
        from datetime import datetime, timezone

        from airflow_hoop.operators import approval_notify
        from airflow_hoop.operators.approval_request import rewait_trigger

        deadline = deadline or approval_notify.deadline_in(self.timeout)
        if "poll_token" not in event:  # a trigger of an older release, still deferred: ask again
            return self._wait(context, deadline)
        remaining = (deadline - datetime.now(timezone.utc)).total_seconds()
        self.defer(
            trigger=rewait_trigger(
                event, self.poke_interval, end_task=not notifiers, wait_deadline=deadline
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(remaining, 1.0)),
        )

    def _request(self, context: Any, deadline: Any = None) -> Any:
        from airflow_hoop.operators.approval_request import command_for, request_approval

        dag = context["dag"]
        if self.target_task_id not in dag.task_dict:
            raise AirflowFailException(
                f"[approval] target task {self.target_task_id!r} is not in DAG {dag.dag_id}. "
                "Fix: set target_task_id to the sensitive task's id"
            )
        target = dag.get_task(self.target_task_id)
        # Render as the target will: same templates, same run (values of the sensor's own
        # ``task``/``ti`` differ, and the gateway refuses a command that then differs).
        target.render_template_fields(context)
        command = command_for(target, context)
        return request_approval(
            context,
            command,
            target_task_id=self.target_task_id,
            target_map_index=self.target_map_index,
            justification=self.justification,
            hoop_conn_id=self.hoop_conn_id,
            wait_deadline=deadline,
        )

    def _finish(self, review: Any, status: str | None, event: dict[str, Any] | None = None) -> str:
        from airflow_hoop.operators.approval_request import ApprovalRejected, check, outcome

        try:
            if event is not None:
                approved = outcome(event)
            else:
                from airflow_hoop.wire.reviews import Review

                approved = check(Review.model_validate(review), status)
        except ApprovalRejected as exc:
            self.log.error("%s", exc)
            if self.skip_on_reject:
                raise AirflowSkipException(str(exc)) from None
            raise AirflowFailException(str(exc)) from None
        self.log.info("review %s approved: task %s may run", approved.id, self.target_task_id)
        return approved.id
