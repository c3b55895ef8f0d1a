"""The governed DAG of bench/load.py (the plan: load_plan.py; its stock twin: load_dag_stock.py).

SQL through the gateway (HoopPostgresOperator and the stock SQLExecuteQueryOperator on the
``hoop_postgres`` connection, alternating), shell with HoopShellOperator, and writes gated by a
HoopApprovalSensor that bench/load.py approves through the UI plugin's endpoint. A separate
file from the stock DAG so that each task process parses only its own DAG.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import DAG
from load_plan import GOVERNED_DAG, plan

from airflow_hoop.operators.postgres import HoopPostgresOperator
from airflow_hoop.operators.shell import HoopShellOperator
from airflow_hoop.sensors.approval import HoopApprovalSensor

PLAN = plan()
ARGS = {"retries": 0}
#: Parallelism of the run (the scheduler's too: bench/load.py sets both).
ACTIVE = 16

with DAG(
    GOVERNED_DAG,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    default_args=ARGS,
    max_active_tasks=ACTIVE,
):
    ops: dict[str, object] = {}
    for number, task in enumerate(PLAN):
        if task.kind in ("sql", "write"):
            op_class = HoopPostgresOperator if number % 2 else SQLExecuteQueryOperator
            ops[task.task_id] = op_class(
                task_id=task.task_id, conn_id="warehouse_via_hoop", sql=list(task.commands)
            )
        elif task.kind == "shell":
            ops[task.task_id] = HoopShellOperator(
                task_id=task.task_id, connection="ops_shell", bash_command=task.commands[0]
            )
        else:
            target = next(t.task_id for t in PLAN if t.gated_by == task.task_id)
            ops[task.task_id] = HoopApprovalSensor(
                task_id=task.task_id,
                target_task_id=target,
                justification="load benchmark",
                timeout=3600,
                # The script approves within a second; the default 5 s poll would add up to
                # 5 s per gated write to the critical path: the poll interval, not the gateway.
                poke_interval=1,
            )
    for task in PLAN:
        if task.gated_by:
            ops[task.gated_by] >> ops[task.task_id]  # type: ignore[operator]
