"""DAGs of the approval tests: a sensor upstream of a write, a timeout, no sensor, self-approval
(SQL and shell).

Every write goes to the table named in ``dag_run.conf["table"]``; the gateway's rule
(``test_approval*``: writes need data-owners) applies to all of them.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_hoop.operators.postgres import HoopPostgresOperator
from airflow_hoop.operators.shell import HoopShellOperator
from airflow_hoop.sensors.approval import HoopApprovalSensor

INSERT = "INSERT INTO {{ dag_run.conf['table'] }} (id, note) VALUES (%(id)s, %(note)s)"
DEFAULTS = {"retries": 0}


def _load() -> HoopPostgresOperator:
    return HoopPostgresOperator(
        task_id="load",
        conn_id="warehouse_via_hoop",
        sql=INSERT,
        parameters={"id": 1, "note": "{{ run_id }}"},
    )


with DAG(
    "test_approval_flow", schedule=None, start_date=datetime(2026, 1, 1), default_args=DEFAULTS
):
    approve = HoopApprovalSensor(
        task_id="approve_load",
        target_task_id="load",
        justification="Load {{ dag_run.conf['table'] }}: {{ dag_run.conf.get('why', '') }}",
        timeout=600,
    )
    approve >> _load()

with DAG(
    "test_approval_timeout", schedule=None, start_date=datetime(2026, 1, 1), default_args=DEFAULTS
):
    (
        HoopApprovalSensor(
            task_id="approve_load", target_task_id="load", justification="nobody will", timeout=6
        )
        >> _load()
    )

with DAG(
    "test_approval_nosensor", schedule=None, start_date=datetime(2026, 1, 1), default_args=DEFAULTS
):
    _load()

with DAG(
    "test_approval_self", schedule=None, start_date=datetime(2026, 1, 1), default_args=DEFAULTS
):
    HoopPostgresOperator(
        task_id="load",
        conn_id="warehouse_via_hoop",
        sql=INSERT,
        parameters={"id": 1, "note": "{{ run_id }}"},
        requires_approval=True,
        approval_justification="self-approved load of {{ dag_run.conf['table'] }}",
    )

with DAG(
    "test_approval_shell", schedule=None, start_date=datetime(2026, 1, 1), default_args=DEFAULTS
):
    HoopShellOperator(
        task_id="load",
        connection="ops_shell",
        bash_command="psql -v ON_ERROR_STOP=1 -qc "
        "\"INSERT INTO {{ dag_run.conf['table'] }} (id, note) VALUES (1, 'shell')\"",
        requires_approval=True,
        approval_justification="shell load of {{ dag_run.conf['table'] }}",
    )

with DAG(
    "test_approval_reschedule",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    default_args=DEFAULTS,
):
    (
        HoopApprovalSensor(
            task_id="approve_load",
            target_task_id="load",
            justification="classic sensor",
            deferrable=False,
            mode="reschedule",
            # Not shorter: with pokes 2 s apart, Airflow 3.3's scheduler sometimes applied the
            # previous poke's late executor event to the next poke and failed it (not ours).
            poke_interval=10,
            timeout=600,
        )
        >> _load()
    )
