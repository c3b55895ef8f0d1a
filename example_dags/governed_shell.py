"""A shell step through the Hoop gateway: export a table with ``psql \\copy`` as the step.

Compare with ``BashOperator(bash_command=..., env={"PGPASSWORD": ...})``: the command runs
on the gateway host, not on the worker; the step never holds a database password (the
gateway exports the step's own short-lived user as PGUSER/PGPASSWORD and masks the password
out of the output); the exact script, its exit code and a digest of its output are in the
ledger; the user is revoked when the task ends.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_hoop.operators.postgres import HoopPostgresOperator
from airflow_hoop.operators.shell import HoopShellOperator

with DAG(
    dag_id="governed_shell",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["airflow-hoop", "example"],
) as dag:
    stage = HoopPostgresOperator(
        task_id="stage_shipments",
        conn_id="warehouse_via_hoop",
        sql=[
            "CREATE TABLE IF NOT EXISTS shipments (id int PRIMARY KEY, dest text, kg numeric)",
            "INSERT INTO shipments VALUES (1, 'Lisbon', 12.5), (2, 'Oslo', 3), (3, 'Quito', 40)"
            " ON CONFLICT (id) DO NOTHING",
        ],
        autocommit=True,
    )

    # Runs in a fresh directory on the gateway host, in its sandbox, removed afterwards: a real
    # DAG would ship the file from here (e.g. `aws s3 cp`, on a connection with `network: host`),
    # with credentials the connection provides.
    export = HoopShellOperator(
        task_id="export_shipments",
        connection="ops_shell",
        bash_command="""
            set -euo pipefail
            psql -v ON_ERROR_STOP=1 -c "\\copy (SELECT * FROM shipments ORDER BY id) \\
                TO 'shipments.csv' WITH (FORMAT csv, HEADER)"
            echo "exported $(($(wc -l < shipments.csv) - 1)) rows as $PGUSER on $RUN_DATE"
            echo "password seen by the command: $PGPASSWORD"  # recorded and logged as ***
            gzip -n shipments.csv
            sha256sum shipments.csv.gz | cut -d' ' -f1
        """,
        # UI- and API-triggered runs have no logical date (``ds``); every run has ``run_after``.
        env={"RUN_DATE": "{{ dag_run.run_after | ds }}"},
    )

    stage >> export
