"""HoopPostgresOperator: SQLExecuteQueryOperator, governed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator

from airflow_hoop.defaults import DEFAULT_POLL_INTERVAL
from airflow_hoop.operators.approval_mixin import RequiresApprovalMixin, notifier_list
from airflow_hoop.operators.step_commitment import StepCommitmentMixin
from airflow_hoop.wire.identity import COMMITMENT_FIELD

if TYPE_CHECKING:
    from airflow_hoop.hooks.postgres import HoopPostgresHook

# The hook, the step session and the approval machinery are imported where a task uses them,
# not at module level: the dag-processor parses a DAG file over and over (and once more per
# task callback), and none of it needs Vault or the gateway client (airflow_hoop/defaults.py).


class HoopPostgresOperator(StepCommitmentMixin, RequiresApprovalMixin, SQLExecuteQueryOperator):
    """Run SQL through the Hoop gateway as this step, with a database user of its own.

    A drop-in replacement for ``SQLExecuteQueryOperator``: ``sql`` (a string, a list, or a
    templated ``.sql`` file), ``parameters``, ``handler``, ``split_statements``,
    ``return_last``, ``autocommit``, ``show_return_value_in_logs`` and the XCom result behave
    the same. ``conn_id`` names a ``hoop_postgres`` connection. Parameters are bound by the
    gateway (psycopg), never interpolated into the SQL text.

    When the task ends (success, failure or kill), the gateway revokes the step's database
    user and the task revokes its Vault token.

    ``requires_approval=True``: before running, the task asks the gateway for a review of its
    exact rendered SQL (bound to this task instance and try) and defers, holding no worker
    slot, until a person decides in the Airflow UI. ``approval_justification`` (templated) is
    shown to the reviewer; ``approval_timeout`` (seconds, default 24 h) fails the task when
    nobody decides; a rejection fails it without retries, the reason in the log.
    ``approval_notifiers`` (Airflow notifiers, e.g. ``SmtpNotifier``) are told of the request,
    of a reminder before the timeout and of the decision (docs/notifications.md).
    """

    template_fields: Sequence[str] = (
        *SQLExecuteQueryOperator.template_fields,
        "approval_justification",
        COMMITMENT_FIELD,
    )

    def __init__(
        self,
        *,
        conn_id: str,
        hoop_conn_id: str | None = None,
        requires_approval: bool = False,
        approval_justification: str = "",
        approval_timeout: float = 24 * 3600.0,
        approval_poll_interval: float = DEFAULT_POLL_INTERVAL,
        approval_notifiers: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id=conn_id, **kwargs)
        self.hoop_conn_id = hoop_conn_id
        self.requires_approval = requires_approval
        self.approval_justification = approval_justification
        self.approval_timeout = approval_timeout
        self.approval_poll_interval = approval_poll_interval
        self.approval_hoop_conn_id = hoop_conn_id
        self.approval_notifiers = notifier_list(approval_notifiers)
        #: OpenLineage of the executed SQL, with schemas (``_capture_lineage``).
        self._hoop_lineage: Any = None

    def get_db_hook(self) -> HoopPostgresHook:
        from airflow_hoop.hooks.postgres import HoopPostgresHook

        hook = HoopPostgresHook(
            hoop_postgres_conn_id=self.conn_id,
            hoop_conn_id=self.hoop_conn_id,
            gateway_connection=self.database,
            **{k: v for k, v in self.hook_params.items() if k not in ("hoop_conn_id",)},
        )
        return hook

    def get_openlineage_facets_on_start(self) -> Any:
        """The SQL's inputs and outputs as the stock operator's lineage names them, without a
        SQLAlchemy engine (a direct connection would bypass the gateway): ``hooks/lineage.py``.

        After ``execute``, with the column schemas it read through the gateway while the step
        was live; before (the START event), parsed from the SQL only.
        """
        if self._hoop_lineage is not None:
            return self._hoop_lineage
        try:
            from airflow_hoop.hooks.lineage import sql_lineage
        except ImportError:  # the OpenLineage provider is not installed
            return None
        return sql_lineage(self.get_db_hook(), getattr(self, "sql", None))

    def _capture_lineage(self) -> None:
        """The datasets with their schemas, while the step can still query (OpenLineage on)."""
        try:
            from airflow_hoop.hooks.lineage import lineage_enabled, sql_lineage
        except ImportError:
            return
        if not lineage_enabled():
            return
        try:
            self._hoop_lineage = sql_lineage(
                self.get_db_hook(), getattr(self, "sql", None), with_schemas=True
            )
        except Exception as exc:  # lineage never fails the task; the COMPLETE event parses
            self.log.warning("OpenLineage schema facets not read: %s", exc)

    def execute(self, context: Any) -> Any:
        self.wait_for_own_approval(context, resume_method="execute_approved")
        return self._execute_sql(context)

    def execute_approved(self, context: Any, event: dict[str, Any]) -> Any:
        """Resumed after the review was decided: run the approved SQL (or fail)."""
        self.approval_granted(event, context, resume_method="execute_approved")
        return self._execute_sql(context)

    def _execute_sql(self, context: Any) -> Any:
        from airflow_hoop.task.step_session import end_all_steps

        try:
            result = super().execute(context)
            self._capture_lineage()
            return result
        finally:
            end_all_steps()

    def on_kill(self) -> None:
        from airflow_hoop.task.step_session import end_all_steps, kill_all_steps

        kill_all_steps()
        end_all_steps()
