"""Publish a step commitment through the task's supervisor (hooks used in ``@task`` code).

The SDK's ``SetRenderedFields`` message is how the task runner records a task's rendered
fields; the supervisor writes it under its own task-instance id, whatever the task asks, so
it is a channel Airflow attests. It replaces the row: the task's rendered fields are sent
again, with the commitment added. This is the SDK's internal message (the same in task-sdk
1.1 to 1.3, Airflow 3.1 to 3.3); operators use their template field instead.
"""

from __future__ import annotations

from typing import Any

from airflow_hoop.errors import IdentityError
from airflow_hoop.task import attestation
from airflow_hoop.wire.identity import COMMITMENT_FIELD


def commit_via_supervisor(value: str) -> None:
    """Send the running task's rendered fields plus ``hoop_step_commitment`` to its supervisor."""
    try:
        from airflow.sdk import get_current_context
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import SetRenderedFields
    except ImportError as exc:
        raise IdentityError(
            f"this Airflow has no task runtime to commit through ({exc.name})",
            "use Airflow 3.1 or later, or a hoop operator",
        ) from None
    comms: Any = getattr(task_runner, "SUPERVISOR_COMMS", None)
    if comms is None:
        raise IdentityError(
            "no supervisor to commit the step through (not inside a running task)",
            "call the hook from inside a task",
        )
    ti = get_current_context()["ti"]
    fields = dict(task_runner._serialize_rendered_fields(ti.task))
    fields[COMMITMENT_FIELD] = value
    comms.send(SetRenderedFields(rendered_fields=fields))


def install() -> None:
    """Make ``task.attestation`` publish through the supervisor when no operator did."""
    attestation.set_committer(commit_via_supervisor)
