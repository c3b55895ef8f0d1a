"""HoopPostgresOperator: SQLExecuteQueryOperator, governed."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator

from airflow_hoop.hooks.postgres import HoopPostgresHook
from airflow_hoop.step_session import end_all_steps, kill_all_steps


class HoopPostgresOperator(SQLExecuteQueryOperator):
    """Run SQL through the Hoop gateway as this step, with a database user of its own.

    A drop-in replacement for ``SQLExecuteQueryOperator``: ``sql`` (a string, a list, or a
    templated ``.sql`` file), ``parameters``, ``handler``, ``split_statements``,
    ``return_last``, ``autocommit``, ``show_return_value_in_logs`` and the XCom result behave
    the same. ``conn_id`` names a ``hoop_postgres`` connection. Parameters are bound by the
    gateway (psycopg), never interpolated into the SQL text.

    When the task ends (success, failure or kill), the gateway revokes the step's database
    user and the task revokes its Vault token.
    """

    def __init__(self, *, conn_id: str, hoop_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(conn_id=conn_id, **kwargs)
        self.hoop_conn_id = hoop_conn_id

    def get_db_hook(self) -> HoopPostgresHook:
        hook = HoopPostgresHook(
            hoop_postgres_conn_id=self.conn_id,
            hoop_conn_id=self.hoop_conn_id,
            gateway_connection=self.database,
            **{k: v for k, v in self.hook_params.items() if k not in ("hoop_conn_id",)},
        )
        return hook

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        finally:
            end_all_steps()

    def on_kill(self) -> None:
        kill_all_steps()
        end_all_steps()
