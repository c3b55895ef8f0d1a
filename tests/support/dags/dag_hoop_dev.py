"""A DAG whose 'hoop' connection is a hoop.dev gateway (an hpk_ API key, no Vault).

tests/integration/test_hoop_contract.py runs it against the hoop stand-in: the select task returns
rows read from psql's text; the parameters task is refused before anything is sent.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_hoop.operators.postgres import HoopPostgresOperator

SELECT = "SELECT 1 AS n, NULL AS missing, 'a b' AS s, true AS flag, 2.50::numeric AS d;"

with DAG(dag_id="test_hoop_dev", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    select = HoopPostgresOperator(task_id="select", conn_id="warehouse_via_hoop_dev", sql=SELECT)
    with_parameters = HoopPostgresOperator(
        task_id="with_parameters",
        conn_id="warehouse_via_hoop_dev",
        sql="SELECT %(n)s::int AS n",
        parameters={"n": 1},
    )
    select >> with_parameters
