"""A small ETL whose every statement runs through the Hoop gateway.

Each task logs in to Vault as itself, the gateway mints it a database user of its own, and
the ledger records every statement. Compare with the same DAG written with
``SQLExecuteQueryOperator(conn_id="warehouse")``: only the operator and conn_id change.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import DAG, task

from airflow_hoop.hooks.postgres import HoopPostgresHook
from airflow_hoop.operators.postgres import HoopPostgresOperator

# Runs triggered from the UI or the REST API have no logical date (Airflow 3), so ``ds`` is
# undefined there; every run has ``run_after``.
RUN_DAY = "{{ dag_run.run_after | ds }}"
DAY_BEFORE = "{{ macros.ds_add(dag_run.run_after | ds, -1) }}"

with DAG(
    dag_id="governed_etl",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    template_searchpath=[str(Path(__file__).parent / "sql")],
    tags=["airflow-hoop", "example"],
) as dag:
    create_tables = HoopPostgresOperator(
        task_id="create_tables",
        conn_id="warehouse_via_hoop",
        sql="create_tables.sql",
        split_statements=True,
        autocommit=True,
    )

    # Parameters are bound by the gateway (psycopg): values never become SQL text.
    load_orders = HoopPostgresOperator(
        task_id="load_orders",
        conn_id="warehouse_via_hoop",
        sql="""
            INSERT INTO orders (order_id, customer, amount, ordered_on)
            SELECT * FROM unnest(%(ids)s::int[], %(customers)s::text[],
                                 %(amounts)s::numeric[], %(days)s::date[])
        """,
        parameters={
            "ids": [1, 2, 3, 4, 5],
            "customers": ["acme", "globex", "O'Reilly; DROP TABLE orders; --", "initech", "acme"],
            "amounts": [120.50, 80.00, 42.42, 310.10, 15.00],
            "days": [RUN_DAY, RUN_DAY, RUN_DAY, DAY_BEFORE, RUN_DAY],
        },
    )

    # The stock operator routes through the gateway too: the connection type picks the hook.
    transform = SQLExecuteQueryOperator(
        task_id="transform",
        conn_id="warehouse_via_hoop",
        sql=[
            "DELETE FROM daily_revenue",
            """INSERT INTO daily_revenue (ordered_on, orders, revenue, loaded_by)
               SELECT ordered_on, count(*), sum(amount), session_user
               FROM orders GROUP BY ordered_on""",
        ],
    )

    read_back = HoopPostgresOperator(
        task_id="read_back",
        conn_id="warehouse_via_hoop",
        sql="SELECT ordered_on, orders, revenue FROM daily_revenue ORDER BY ordered_on",
        show_return_value_in_logs=True,
    )

    @task
    def summarize() -> dict[str, float]:
        """A Python task using the hook directly: get_df works through the gateway."""
        hook = HoopPostgresHook("warehouse_via_hoop")
        frame = hook.get_df("SELECT customer, amount FROM orders")
        top = hook.get_first("SELECT customer FROM orders ORDER BY amount DESC LIMIT 1")
        return {
            "customers": float(frame["customer"].nunique()),
            "top_is_initech": float(top[0] == "initech"),
        }

    create_tables >> load_orders >> transform >> read_back >> summarize()
