"""Reads the masking test table through the gateway (tests/integration/test_masking_gateway.py
creates it).

Whatever the tasks see, log and return (XCom) must be masked by the warehouse's policy.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_hoop.hooks.postgres import HoopPostgresHook
from airflow_hoop.operators.postgres import HoopPostgresOperator

with DAG(
    dag_id="test_masking",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["airflow-hoop", "test"],
):
    HoopPostgresOperator(
        task_id="read_customers",
        conn_id="warehouse_via_hoop",
        sql="SELECT id, email, card_number, note FROM masking_customers ORDER BY id",
        show_return_value_in_logs=True,
    )

    @task
    def print_customers() -> list[str]:
        """A Python task with the hook: prints the rows it got to the task log."""
        rows = HoopPostgresHook("warehouse_via_hoop").get_records(
            "SELECT email, note FROM masking_customers ORDER BY id"
        )
        for row in rows:
            print("customer row:", row)
        return [str(r[0]) for r in rows]

    print_customers()
