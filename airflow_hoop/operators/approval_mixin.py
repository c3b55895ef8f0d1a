"""RequiresApprovalMixin: an operator's ``requires_approval=True`` (approval of its own command).

Kept apart from ``approval_request`` so that a DAG file using the operators imports none of the
approval machinery (wire models, the trigger, the gateway client) at parse: a task imports it
when it asks for an approval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_hoop.defaults import DEFAULT_POLL_INTERVAL

if TYPE_CHECKING:
    from airflow_hoop.wire.reviews import Review


def notifier_list(notifiers: Any) -> list[Any]:
    """One notifier or a list, as Airflow's ``on_*_callback`` take them (docs/notifications.md)."""
    if notifiers is None:
        return []
    return list(notifiers) if isinstance(notifiers, list | tuple) else [notifiers]


class RequiresApprovalMixin:
    """``requires_approval=True`` for an operator: approval of its own command, then run it.

    Use in ``execute``::

        def execute(self, context):
            self.wait_for_own_approval(context, resume_method="execute_approved")
            return self._run(context)

        def execute_approved(self, context, event):
            self.approval_granted(event, context, resume_method="execute_approved")
            return self._run(context)

    The review is bound to this task instance and this try (a retry asks again) and to the
    rendered command (``command_for``: the operator's ``approval_command(context)`` or its SQL).
    """

    requires_approval: bool = False
    approval_justification: str = ""
    approval_timeout: float = 24 * 3600.0
    approval_poll_interval: float = DEFAULT_POLL_INTERVAL
    approval_hoop_conn_id: str | None = None
    #: Airflow notifiers told of the request, a reminder and the decision (docs/notifications.md).
    approval_notifiers: Sequence[Any] = ()

    def wait_for_own_approval(self, context: Mapping[str, Any], resume_method: str) -> None:
        """Return at once when approved (or not required); otherwise defer to the trigger."""
        if not self.requires_approval:
            return
        from airflow_hoop.operators import approval_notify

        deadline = approval_notify.deadline_in(self.approval_timeout)
        created = self._wait(context, resume_method, deadline, remind=True)
        if created is not None:
            self._approved_or_fail(created.review, created.review.status)

    def approval_granted(
        self,
        event: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
        resume_method: str = "execute_approved",
    ) -> Review:
        """After the deferral: the approved review, or AirflowFailException (no retry).

        With ``context``: a reminder event sends the notifiers' reminder and defers again
        (``resume_method``), and the decision is posted to the notifiers.
        """
        from airflow.providers.common.compat.sdk import AirflowFailException

        from airflow_hoop.operators import approval_notify
        from airflow_hoop.operators.approval_request import ApprovalRejected, outcome

        if context is not None:
            notifiers = approval_notify.notifiers_of(self)
            deadline = approval_notify.event_deadline(event)
            if event.get("status") == approval_notify.REMIND and "review" in event:
                from airflow_hoop.wire.reviews import Review

                review = Review.model_validate(event["review"])
                approval_notify.notify(notifiers, context, review, "review.reminder", deadline)
                deadline = deadline or approval_notify.deadline_in(self.approval_timeout)
                if "poll_token" in event:
                    # The same review, not a new request: decided meanwhile, asking again
                    # would open (and announce) a second one.
                    self._rewait(event, resume_method, deadline)
                created = self._wait(context, resume_method, deadline, remind=False)
                assert created is not None  # _wait defers unless the review is settled
                if created.review.status in approval_notify.DECIDED:
                    approval_notify.notify(notifiers, context, created.review, "review.decided")
                return self._approved_or_fail(created.review, created.review.status)
            decided = approval_notify.decided_review(event)
            if decided is not None:
                approval_notify.notify(notifiers, context, decided, "review.decided")
        try:
            return outcome(event)
        except ApprovalRejected as exc:
            raise AirflowFailException(str(exc)) from None

    def _rewait(self, event: Mapping[str, Any], resume_method: str, deadline: Any) -> None:
        """Defer again on the same review (its poll token from the reminder event); raises
        Airflow's deferral, so it never returns."""
        from datetime import datetime, timezone

        from airflow_hoop.operators.approval_request import rewait_trigger

        remaining = (deadline - datetime.now(timezone.utc)).total_seconds()
        self.defer(  # type: ignore[attr-defined]
            trigger=rewait_trigger(event, self.approval_poll_interval, wait_deadline=deadline),
            method_name=resume_method,
            timeout=timedelta(seconds=max(remaining, 1.0)),
        )

    def _wait(
        self, context: Mapping[str, Any], resume_method: str, deadline: Any, *, remind: bool
    ) -> Any:
        """Ask (idempotent: the open review, a fresh poll token); defer unless settled.

        Returns the ``ReviewCreated`` when the review is already settled.
        """
        from datetime import datetime, timezone

        from airflow_hoop.operators import approval_notify
        from airflow_hoop.operators.approval_request import (
            command_for,
            request_approval,
            settled,
            trigger_for,
        )

        ti = context["ti"]
        map_index = getattr(ti, "map_index", None)
        created, gateway_url = request_approval(
            context,
            command_for(self, context),
            target_task_id=str(getattr(self, "task_id", "")),
            target_map_index=-1 if map_index is None else int(map_index),
            target_try_number=int(ti.try_number),
            justification=self.approval_justification,
            hoop_conn_id=self.approval_hoop_conn_id,
            wait_deadline=deadline,
        )
        notifiers = approval_notify.notifiers_of(self)
        if created.created:
            approval_notify.notify(notifiers, context, created.review, "review.requested", deadline)
        if settled(created.review) is not None:
            return created
        remaining = (deadline - datetime.now(timezone.utc)).total_seconds()
        remind_at = (
            approval_notify.remind_at(created.review.created_at, deadline)
            if remind and notifiers
            else None
        )
        self.defer(  # type: ignore[attr-defined]
            trigger=trigger_for(
                created,
                gateway_url,
                self.approval_poll_interval,
                remind_at=remind_at,
                wait_deadline=deadline,
            ),
            method_name=resume_method,
            timeout=timedelta(seconds=max(remaining, 1.0)),
        )
        return None

    def _approved_or_fail(self, review: Review, status: str) -> Review:
        from airflow.providers.common.compat.sdk import AirflowFailException

        from airflow_hoop.operators.approval_request import ApprovalRejected, check, settled

        try:
            return check(review, settled(review) or status)
        except ApprovalRejected as exc:
            raise AirflowFailException(str(exc)) from None
