"""HoopPostgresHook: a DbApiHook whose every statement goes through the gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.sql.hooks.sql import DbApiHook

from airflow_hoop.defaults import DEFAULT_HOOP_CONN_ID
from airflow_hoop.errors import ConfigError

if TYPE_CHECKING:
    from airflow_hoop.hooks.dbapi import GatewayConnection
    from airflow_hoop.hooks.hoop import HoopHook

# The DB-API over the gateway and the step session are imported when a connection is opened:
# a DAG file that imports this hook stays cheap to parse (airflow_hoop/defaults.py).


class HoopPostgresHook(DbApiHook):
    """Postgres through the Hoop gateway, as the running step, with a per-step database user.

    Connection type ``hoop_postgres``: ``schema`` names the gateway connection (e.g.
    ``warehouse``); the extra ``hoop_conn_id`` names the ``hoop`` connection (default
    ``hoop_default``). ``run``, ``get_records``, ``get_first``, ``get_df`` (pandas) and
    ``insert_rows`` work as on ``PostgresHook``. There is deliberately no SQLAlchemy engine:
    a direct connection would bypass the gateway.

    ``options`` (``hook_params={"options": "-c statement_timeout=3000ms"}``, or the
    connection's ``options`` extra, which wins as with ``PostgresHook``): libpq's switches for
    ``statement_timeout``, ``lock_timeout``, ``idle_in_transaction_session_timeout``, an
    ``application_name`` prefix and, where the gateway connection allows it, ``search_path``.
    The gateway applies them to the step's session; any other switch fails the task with a
    message naming it (``wire/session_settings.py``), it is never dropped silently.
    """

    conn_name_attr = "hoop_postgres_conn_id"
    default_conn_name = "hoop_postgres_default"
    conn_type = "hoop_postgres"
    hook_name = "Postgres via Hoop gateway"
    supports_autocommit = True
    supports_executemany = True
    _placeholder = "%s"

    def __init__(
        self,
        *args: Any,
        hoop_conn_id: str | None = None,
        gateway_connection: str | None = None,
        options: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.hoop_conn_id = hoop_conn_id
        self.gateway_connection = gateway_connection
        self.options = options

    def _target(self) -> str:
        # SQLExecuteQueryOperator(database=...) sets hook.schema for non-postgres conn types.
        name = self.gateway_connection or getattr(self, "schema", None) or self.connection.schema
        if not name:
            raise ConfigError(
                f"connection '{self.get_conn_id()}' does not name a gateway connection",
                "put the gateway connection name (e.g. warehouse) in the schema field",
            )
        return name

    def _hoop(self) -> HoopHook:
        from airflow_hoop.hooks.hoop import HoopHook

        conn_id = self.hoop_conn_id or self.connection.extra_dejson.get("hoop_conn_id")
        return HoopHook(conn_id or DEFAULT_HOOP_CONN_ID)

    def get_conn(self) -> GatewayConnection:
        """A DB-API connection that runs statements on the gateway as the current step."""
        if self.connection.conn_type not in (None, "", self.conn_type):
            raise ConfigError(
                f"connection '{self.get_conn_id()}' is of type {self.connection.conn_type}, "
                f"not {self.conn_type}: it would bypass the gateway",
                f"use a '{self.conn_type}' connection",
            )
        from airflow_hoop.hooks.dbapi import GatewayConnection
        from airflow_hoop.wire.session_settings import parse_libpq_options

        # Parsed before the step starts: a refused option fails the task before any login.
        options = self.connection.extra_dejson.get("options", self.options)
        settings = parse_libpq_options(options)
        return GatewayConnection(self._hoop().get_step(), self._target(), settings)

    @property
    def dialect_name(self) -> str:
        return "postgresql"

    def get_uri(self) -> str:
        return f"hoop-postgres://{self._target()}"

    @property
    def inspector(self) -> Any:
        """Table and column lookups through the gateway (``hooks/inspector.py``), as the step."""
        from airflow_hoop.hooks.inspector import GatewayInspector

        return GatewayInspector(self)

    @property
    def sqlalchemy_url(self) -> Any:
        raise NotImplementedError(
            "HoopPostgresHook has no SQLAlchemy URL: every statement must go through the gateway"
        )

    # -- OpenLineage (apache-airflow-providers-openlineage; docs/correlation.md) ---------------
    def get_openlineage_database_info(self, connection: Any) -> Any:
        """The target database behind the gateway connection, from the connection's extra."""
        from airflow_hoop.hooks.lineage import database_info

        return database_info(connection.extra_dejson, self._target())

    def get_openlineage_database_dialect(self, connection: Any) -> str:
        return "postgres"

    def get_openlineage_default_schema(self) -> str | None:
        """The extra's ``lineage_default_schema`` (default ``public``), without a query: the
        lineage is built after the step ended, when the gateway refuses the step."""
        from airflow_hoop.hooks.lineage import DEFAULT_SCHEMA

        schema = self.connection.extra_dejson.get("lineage_default_schema")
        return str(schema) if schema else DEFAULT_SCHEMA

    def get_openlineage_database_specific_lineage(self, task_instance: Any) -> Any:
        """The ``airflowHoop`` run facet: the step, its database users and ledger seqs."""
        from airflow_hoop.hooks.lineage import step_lineage

        return step_lineage(task_instance)

    def _get_pandas_df(self, sql: Any, parameters: Any = None, **kwargs: Any) -> Any:
        import pandas as pd

        conn = self.get_conn()
        try:
            cur = conn.cursor().execute(sql, parameters)
            columns = [d[0] for d in cur.description or []]
            return pd.DataFrame.from_records(cur.fetchall(), columns=columns, **kwargs)
        finally:
            conn.close()
