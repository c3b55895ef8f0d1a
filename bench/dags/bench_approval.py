"""DAGs of bench/approval_latency.py (gateway rule: writes of bench_approval* need data-owners)."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_hoop.operators.postgres import HoopPostgresOperator
from airflow_hoop.sensors.approval import HoopApprovalSensor

INSERT = "INSERT INTO {{ dag_run.conf['table'] }} (id, note) VALUES (%(id)s, %(note)s)"
SENSORS = int(os.environ.get("BENCH_APPROVAL_SENSORS", "500"))


def _load() -> HoopPostgresOperator:
    return HoopPostgresOperator(
        task_id="load",
        conn_id="warehouse_via_hoop",
        sql=INSERT,
        parameters={"id": 1, "note": "{{ run_id }}"},
    )


# Latency: approval click -> the approved task's statement reaches the gateway.
with DAG("bench_approval_latency", schedule=None, start_date=datetime(2026, 1, 1)):
    (
        HoopApprovalSensor(
            task_id="approve", target_task_id="load", justification="bench", timeout=3600
        )
        >> _load()
    )

# Triggerer cost: many deferred sensors, each waiting on a review of its own.
with DAG("bench_approval_many", schedule=None, start_date=datetime(2026, 1, 1)):
    (
        HoopApprovalSensor.partial(
            task_id="approve", target_task_id="load", justification="bench", timeout=7200
        ).expand(target_map_index=list(range(SENSORS)))
        >> _load()
    )
