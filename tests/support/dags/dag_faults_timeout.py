"""A governed SQL task killed by Airflow's execution_timeout while its statement runs."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_hoop.operators.postgres import HoopPostgresOperator

with DAG(
    dag_id="test_faults_timeout", schedule=None, start_date=datetime(2026, 1, 1), catchup=False
):
    HoopPostgresOperator(
        task_id="sleeps_too_long",
        conn_id="warehouse_via_hoop",
        sql="SELECT pg_sleep(600)",
        execution_timeout=timedelta(seconds=5),
        retries=0,
    )
