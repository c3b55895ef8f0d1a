"""HoopApprovalSensor: a human approves a sensitive task's exact command before it runs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException
from airflow.sdk import BaseSensorOperator

from airflow_hoop.defaults import DEFAULT_POLL_INTERVAL

# The approval machinery (wire models, trigger, gateway client) is imported when the sensor
# runs, not when its DAG file is parsed (airflow_hoop/defaults.py says why).


class HoopApprovalSensor(BaseSensorOperator):
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
    """

    template_fields: Sequence[str] = ("justification",)
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
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.target_task_id = target_task_id
        self.justification = justification
        self.target_map_index = target_map_index
        self.hoop_conn_id = hoop_conn_id
        self.skip_on_reject = skip_on_reject
        self.deferrable = deferrable

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from airflow_hoop.operators.approval_request import settled, trigger_for

        started = time.monotonic()
        created, gateway_url = self._request(context)
        if settled(created.review) is not None:
            return self._finish(created.review.model_dump(mode="json"), settled(created.review))
        self.log.info(
            "deferring until review %s is decided (poll every %ss)",
            created.review.id,
            self.poke_interval,
        )
        remaining = max(self.timeout - (time.monotonic() - started), 1.0)
        self.defer(
            trigger=trigger_for(created, gateway_url, self.poke_interval, end_task=True),
            method_name="execute_complete",
            timeout=timedelta(seconds=remaining),
        )

    def poke(self, context: Any) -> bool:
        """Non-deferrable mode: ask (idempotent) and look at the review's state."""
        from airflow_hoop.operators.approval_request import settled

        created, _ = self._request(context)
        status = settled(created.review)
        if status is None:
            return False
        self._finish(created.review.model_dump(mode="json"), status)
        return True

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
        """Resumed from the trigger: approved → success; otherwise fail (or skip)."""
        return self._finish(event.get("review"), event.get("status"), event)

    # -- helpers --------------------------------------------------------------------------------
    def _request(self, context: Any) -> Any:
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
        command = command_for(target)
        return request_approval(
            context,
            command,
            target_task_id=self.target_task_id,
            target_map_index=self.target_map_index,
            justification=self.justification,
            hoop_conn_id=self.hoop_conn_id,
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
