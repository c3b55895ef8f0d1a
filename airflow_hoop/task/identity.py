"""StepIdentity: who a governed step is, built from the Airflow task context.

This module does not import Airflow: it reads the context mapping the task receives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_hoop.errors import IdentityError
from airflow_hoop.ledger.records import StepRef


class StepIdentity(StepRef):
    """The identity a step logs in to Vault with and the gateway records.

    ``key`` (``dag/task/run/try[/map]``) is the JWT subject; it also reaches the dynamic
    database user's name, so a DBA can tell the DAG and task from ``pg_stat_activity``.
    """

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> StepIdentity:
        """Build the identity from an Airflow task context; fail closed when it is incomplete."""
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        if ti is None or dag_run is None:
            raise IdentityError(
                "no task instance in the context, so the step has no identity",
                "use HoopPostgresHook/Operator inside a running Airflow task",
            )
        triggered_by = _triggering_user(dag_run)
        return cls(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            try_number=int(getattr(ti, "try_number", 1) or 1),
            map_index=int(
                getattr(ti, "map_index", -1) if getattr(ti, "map_index", None) is not None else -1
            ),
            triggered_by=triggered_by,
            # Airflow 3's RuntimeTaskInstance has the try's id; the issuer checks it.
            ti_id=str(ti.id) if getattr(ti, "id", None) else None,
        )


def _triggering_user(dag_run: Any) -> str | None:
    for attr in ("triggering_user_name", "triggered_by_user", "owner"):
        value = getattr(dag_run, attr, None)
        if isinstance(value, str) and value:
            return value
    return None
