"""HoopShellOperator at its edges: environment isolation, kill, bad output, limits."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_hoop.operators.shell import HoopShellOperator

with DAG(dag_id="test_shell_edge", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    # The whole environment on the last line, so that XCom carries it to the test.
    HoopShellOperator(
        task_id="environment",
        connection="ops_shell",
        bash_command="env | sort | tr '\\n' ' '",
        env={"FROM_TASK": "task-value"},
    )
    # Never ends: the task's execution_timeout kills it (a real task kill: on_kill).
    HoopShellOperator(
        task_id="never_ends",
        connection="ops_shell",
        bash_command="pwd; sleep 100000 & wait",
        execution_timeout=timedelta(seconds=4),
        retries=0,
    )
    HoopShellOperator(
        task_id="binary_output", connection="ops_shell", bash_command=r"printf 'a\xff\x00b\n'"
    )
    HoopShellOperator(
        task_id="output_200mb",
        connection="ops_shell",
        bash_command="head -c 200000000 /dev/zero | tr '\\0' a; echo; echo the last line",
    )
    HoopShellOperator(
        task_id="memory_hog",
        connection="ops_shell",
        bash_command="python3 -c 'x = bytearray(8 << 30)'",
    )
    HoopShellOperator(task_id="empty_script", connection="ops_shell", bash_command="")
