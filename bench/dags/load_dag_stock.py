"""The stock DAG of bench/load.py: load_dag_governed.py's plan with stock operators.

A separate file so that each task process parses only its own DAG. SQLExecuteQueryOperator on
a plain postgres connection with a static user, BashOperator with that user in PG* variables
(bench/load.py puts them in Airflow's environment), and the gated writes behind Airflow's own
human-approval gate: ``ApprovalOperator`` (human-in-the-loop, Airflow 3.1+; on 3.3 the task
waits in ``awaiting_input`` and a worker resumes it once answered), which bench/load.py
answers as ``alice`` through Airflow's HITL API as soon as it waits, as it approves the
governed DAG's reviews through the plugin.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG
from load_plan import STOCK_DAG, plan

PLAN = plan()
ARGS = {"retries": 0}
ACTIVE = 16

with DAG(
    STOCK_DAG,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    default_args=ARGS,
    max_active_tasks=ACTIVE,
):
    stock: dict[str, object] = {}
    for task in PLAN:
        if task.kind in ("sql", "write"):
            stock[task.task_id] = SQLExecuteQueryOperator(
                task_id=task.task_id, conn_id="warehouse_static", sql=list(task.commands)
            )
        elif task.kind == "shell":
            stock[task.task_id] = BashOperator(
                task_id=task.task_id,
                bash_command=task.commands[0],
                env={"BENCH_LOAD": "1"},
                append_env=True,  # PGHOST/PGUSER/PGPASSWORD... of the static user (load.py)
            )
        else:
            stock[task.task_id] = ApprovalOperator(
                task_id=task.task_id, subject="load benchmark: approve the write?"
            )
    for task in PLAN:
        if task.gated_by:
            stock[task.gated_by] >> stock[task.task_id]  # type: ignore[operator]
