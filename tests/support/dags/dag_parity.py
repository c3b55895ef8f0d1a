"""Pairs of tasks: the stock operator on a direct connection, and HoopPostgresOperator.

The test compares each pair's XCom: the governed operator must return exactly what the
stock one returns.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.providers.common.sql.hooks.handlers import fetch_one_handler
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import DAG

from airflow_hoop.operators.postgres import HoopPostgresOperator

CASES: dict[str, dict] = {
    "types": {
        "sql": "SELECT 1 AS n, 'x'::text AS s, 2.50::numeric AS d, DATE '2026-01-02' AS day, "
        "NULL::int AS nothing, ARRAY[1, 2] AS arr, true AS flag, 1.5::float8 AS f",
    },
    "list": {"sql": ["SELECT 1 AS one", "SELECT 2 AS two, 'b' AS bee"]},
    "split_all": {
        "sql": "SELECT 1 AS a; SELECT 'two' AS b;",
        "split_statements": True,
        "return_last": False,
    },
    "split_last": {"sql": "SELECT 1 AS a; SELECT 'two' AS b;", "split_statements": True},
    "params": {
        "sql": "SELECT %(a)s::int + 1 AS a, %(b)s::text AS b",
        "parameters": {"a": 41, "b": "{{ ds }}"},
    },
    "positional": {"sql": "SELECT %s::int * 2, %s::text", "parameters": [21, "it's; $$ok$$"]},
    "fetch_one": {
        "sql": "SELECT 7 AS x, 8 AS y UNION ALL SELECT 9, 10",
        "handler": fetch_one_handler,
    },
    "sql_file": {"sql": "parity.sql", "params": {"limit": 3}},
    "no_rows": {
        "sql": "CREATE TEMP TABLE parity_tmp (x int); INSERT INTO parity_tmp VALUES (1), (2)",
        "autocommit": True,
    },
    "logged": {"sql": "SELECT 'shown' AS v", "show_return_value_in_logs": True},
    # libpq options (hook_params): the session settings reach the step's session.
    "options_settings": {
        "sql": "SELECT current_setting('lock_timeout') AS lock_timeout, "
        "current_setting('idle_in_transaction_session_timeout') AS idle, "
        "split_part(current_setting('application_name'), ' ', 1) AS app",
        "hook_params": {
            "options": "-c lock_timeout=1500ms -c idle_in_transaction_session_timeout=60s "
            "-c application_name=nightly-etl"
        },
    },
    "options_timeout_ok": {
        "sql": "SELECT pg_sleep(0.2)::text AS slept, current_setting('statement_timeout') AS t",
        "hook_params": {"options": "-c statement_timeout=3000ms"},
    },
    # Fails both ways: a 2 s sleep under a 500 ms statement_timeout (FAILING).
    "options_timeout_fails": {
        "sql": "SELECT pg_sleep(2)",
        "hook_params": {"options": "-c statement_timeout=500ms"},
    },
}
#: Cases whose both tasks must fail, the same way.
FAILING = {"options_timeout_fails"}

with DAG(
    dag_id="test_parity",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    template_searchpath=[str(Path(__file__).parent / "sql")],
) as dag:
    for name, kwargs in CASES.items():
        SQLExecuteQueryOperator(task_id=f"direct_{name}", conn_id="warehouse_direct", **kwargs)
        HoopPostgresOperator(task_id=f"hoop_{name}", conn_id="warehouse_via_hoop", **kwargs)
