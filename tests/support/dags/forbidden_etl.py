"""A DAG the gateway's policy does not allow on the warehouse connection."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_hoop.operators.postgres import HoopPostgresOperator

with DAG(dag_id="forbidden_etl", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    HoopPostgresOperator(task_id="sneak", conn_id="warehouse_via_hoop", sql="SELECT 1")
