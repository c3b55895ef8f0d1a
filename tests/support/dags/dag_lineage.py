"""The same SQL twice: the stock operator on a direct connection, and HoopPostgresOperator.

tests/integration/test_openlineage.py compares the OpenLineage events of the two tasks: the
same input and output datasets, and the governed one also carries the ``airflowHoop`` facet.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import DAG

from airflow_hoop.operators.postgres import HoopPostgresOperator

SQL = [
    "INSERT INTO lineage_out (id, total) SELECT o.id, o.amount * 2 FROM lineage_orders o "
    "JOIN lineage_rates r ON r.id = o.id",
    "SELECT count(*) FROM lineage_out",
]

with DAG(
    dag_id="test_lineage",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
) as dag:
    SQLExecuteQueryOperator(task_id="direct", conn_id="warehouse_direct", sql=SQL)
    HoopPostgresOperator(task_id="governed", conn_id="warehouse_via_hoop", sql=SQL)
