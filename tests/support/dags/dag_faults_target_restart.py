"""A governed SQL task whose first try loses its database connection mid-statement.

The first try sleeps long enough for the test to end its backend on the target; the retry
(``retries=1``, no delay) sleeps no more and returns the database user it ran as.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_hoop.operators.postgres import HoopPostgresOperator

with DAG(
    dag_id="test_faults_target_restart",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
):
    HoopPostgresOperator(
        task_id="loses_its_connection",
        conn_id="warehouse_via_hoop",
        sql="SELECT pg_sleep({{ 120 if ti.try_number == 1 else 0 }}), session_user",
        retries=1,
        retry_delay=timedelta(seconds=0),
        execution_timeout=timedelta(seconds=300),
    )
