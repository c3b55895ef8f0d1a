"""RequiresApprovalMixin: an operator's ``requires_approval=True`` (approval of its own command).

Kept apart from ``approval_request`` so that a DAG file using the operators imports none of the
approval machinery (wire models, the trigger, the gateway client) at parse: a task imports it
when it asks for an approval.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_hoop.defaults import DEFAULT_POLL_INTERVAL

if TYPE_CHECKING:
    from airflow_hoop.wire.reviews import Review


class RequiresApprovalMixin:
    """``requires_approval=True`` for an operator: approval of its own command, then run it.

    Use in ``execute``::

        def execute(self, context):
            self.wait_for_own_approval(context, resume_method="execute_approved")
            return self._run(context)

        def execute_approved(self, context, event):
            self.approval_granted(event)
            return self._run(context)

    The review is bound to this task instance and this try (a retry asks again) and to the
    rendered command (``command_for``: the operator's ``approval_command()`` or its SQL).
    """

    requires_approval: bool = False
    approval_justification: str = ""
    approval_timeout: float = 24 * 3600.0
    approval_poll_interval: float = DEFAULT_POLL_INTERVAL
    approval_hoop_conn_id: str | None = None

    def wait_for_own_approval(self, context: Mapping[str, Any], resume_method: str) -> None:
        """Return at once when approved (or not required); otherwise defer to the trigger."""
        if not self.requires_approval:
            return
        from datetime import timedelta

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
            command_for(self),
            target_task_id=str(getattr(self, "task_id", "")),
            target_map_index=-1 if map_index is None else int(map_index),
            target_try_number=int(ti.try_number),
            justification=self.approval_justification,
            hoop_conn_id=self.approval_hoop_conn_id,
        )
        status = settled(created.review)
        if status is not None:
            self._approved_or_fail(created.review, status)
            return
        self.defer(  # type: ignore[attr-defined]
            trigger=trigger_for(created, gateway_url, self.approval_poll_interval),
            method_name=resume_method,
            timeout=timedelta(seconds=self.approval_timeout),
        )

    def approval_granted(self, event: Mapping[str, Any]) -> Review:
        """After the deferral: the approved review, or AirflowFailException (no retry)."""
        from airflow.providers.common.compat.sdk import AirflowFailException

        from airflow_hoop.operators.approval_request import ApprovalRejected, outcome

        try:
            return outcome(event)
        except ApprovalRejected as exc:
            raise AirflowFailException(str(exc)) from None

    def _approved_or_fail(self, review: Review, status: str) -> Review:
        from airflow.providers.common.compat.sdk import AirflowFailException

        from airflow_hoop.operators.approval_request import ApprovalRejected, check

        try:
            return check(review, status)
        except ApprovalRejected as exc:
            raise AirflowFailException(str(exc)) from None
