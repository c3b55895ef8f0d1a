"""Each task breaks one link of the chain; each must fail, naming that link."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_hoop.operators.postgres import HoopPostgresOperator

with DAG(dag_id="test_fail_closed", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    HoopPostgresOperator(task_id="gateway_down", conn_id="warehouse_gateway_down", sql="SELECT 1")
    HoopPostgresOperator(task_id="vault_down", conn_id="warehouse_vault_down", sql="SELECT 1")
    HoopPostgresOperator(task_id="unknown_target", conn_id="warehouse_unknown", sql="SELECT 1")
    HoopPostgresOperator(task_id="still_fine", conn_id="warehouse_via_hoop", sql="SELECT 1")
    # A libpq option the gateway cannot honour: refused by name, never dropped silently.
    HoopPostgresOperator(
        task_id="refused_option",
        conn_id="warehouse_via_hoop",
        sql="SELECT 1",
        hook_params={"options": "-c statement_timeout=5s -c default_transaction_read_only=off"},
    )
