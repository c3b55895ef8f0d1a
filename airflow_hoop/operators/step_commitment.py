"""``hoop_step_commitment``: the template field through which a hoop operator commits.

Filled in the task process just before Airflow renders the operator's fields; the task runner
then sends the rendered fields to its supervisor, which records them under this try's
task-instance id before ``execute`` runs. The issuer reads them there. No extra round trip.
"""

from __future__ import annotations

from typing import Any

from airflow_hoop.task import attestation
from airflow_hoop.wire.identity import COMMITMENT_FIELD


class StepCommitmentMixin:
    """Adds the commitment to an operator's rendered fields (list COMMITMENT_FIELD in its
    ``template_fields``)."""

    hoop_step_commitment: str = ""

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        ti = context.get("ti") if hasattr(context, "get") else None
        ti_id = getattr(ti, "id", None)
        # Only when rendered for its own task instance: an approval sensor renders its target
        # task's fields with the *sensor's* context, and must not replace the sensor's secret.
        if ti_id and getattr(ti, "task_id", None) == getattr(self, "task_id", None):
            # A plain string: rendering leaves it as it is.
            setattr(self, COMMITMENT_FIELD, attestation.prepare(str(ti_id)))
        super().render_template_fields(context, jinja_env)  # type: ignore[misc]
