"""A write that waits for a data owner's approval, given in the Airflow UI.

The gateway's rule for ``governed_approval*`` DAGs (see docs/approvals.md) says writes need one
approval from ``data-owners``. ``approve_refunds`` asks for a review of the exact statements
``apply_refunds`` will send and defers (no worker slot held) until someone approves it on the
task's "Approvals" tab; the gateway then runs those statements, and only those, once. The
person who triggered the run may not approve it: log in as another user (``make ui`` prints
one).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_hoop.operators.postgres import HoopPostgresOperator
from airflow_hoop.sensors.approval import HoopApprovalSensor

with DAG(
    dag_id="governed_approval",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["airflow-hoop", "example"],
) as dag:
    # Read-only: runs at once, no approval needed.
    preview = HoopPostgresOperator(
        task_id="preview_refunds",
        conn_id="warehouse_via_hoop",
        sql="SELECT %(amount)s::numeric AS refund, %(reason)s AS reason",
        parameters={"amount": 42.50, "reason": "damaged parcel"},
        show_return_value_in_logs=True,
    )

    approve = HoopApprovalSensor(
        task_id="approve_refunds",
        target_task_id="apply_refunds",
        justification="Refund 42.50 for a damaged parcel (run {{ run_id }})",
        timeout=3600,
    )

    # The approval is bound to these statements and parameters: a changed command is refused.
    apply = HoopPostgresOperator(
        task_id="apply_refunds",
        conn_id="warehouse_via_hoop",
        sql=[
            "CREATE TABLE IF NOT EXISTS refunds"
            " (run_id text, amount numeric, reason text, applied_at timestamptz DEFAULT now())",
            "INSERT INTO refunds (run_id, amount, reason) VALUES (%(run)s, %(amount)s, %(reason)s)",
        ],
        parameters={"run": "{{ run_id }}", "amount": 42.50, "reason": "damaged parcel"},
        autocommit=True,
    )

    preview >> approve >> apply
