"""The load benchmark's task plan, shared by its DAGs and by bench/load.py's checks (no Airflow).

One plan, two DAGs: ``bench_load_governed`` (through the gateway) and ``bench_load_stock``
(stock operators, a static database user). Every task's commands carry the task's number, so
each statement in the ledger can be traced to exactly one task. Of every ten tasks about five
are SQL, three shell, and two an approval-gated write (sensor + write); one SQL task
(``fail_planned``) divides by zero on purpose: the only failure the DAG plans.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

GOVERNED_DAG = "bench_load_governed"
STOCK_DAG = "bench_load_stock"
WRITES_TABLE = "bench_load_writes"
PLANNED_FAILURES = frozenset({"fail_planned"})
DEFAULT_TASKS = 240

Kind = Literal["sql", "shell", "approve", "write"]


@dataclass(frozen=True)
class TaskPlan:
    """One task: its id, its kind and the exact commands it sends (in order)."""

    task_id: str
    kind: Kind
    commands: list[str] = field(default_factory=list)
    gated_by: str | None = None  # the approval sensor upstream of a write


def sql_commands(number: int) -> list[str]:
    return [
        f"SELECT {number} AS task_number, count(*) FROM generate_series(1, 2000) AS g"
        f" WHERE g % {number % 7 + 2} = 0",
        f"SELECT {number} AS task_number, current_user, now()",
    ]


def shell_command(number: int) -> str:
    return (
        "set -euo pipefail\n"
        f'rows=$(psql -X -tA -v ON_ERROR_STOP=1 -c "SELECT {number} + count(*) FROM pg_class")\n'
        f'echo "task {number}: $rows"\n'
    )


def write_command(number: int) -> str:
    return f"INSERT INTO {WRITES_TABLE} (task_number) VALUES ({number})"


def plan(tasks: int | None = None) -> list[TaskPlan]:
    """``tasks`` task instances (at least 6): SQL, shell, gated writes and one planned failure."""
    n = tasks if tasks is not None else int(os.environ.get("BENCH_LOAD_TASKS", DEFAULT_TASKS))
    if n < 6:
        raise ValueError(f"the load plan needs at least 6 tasks, not {n}")
    gated = max(1, n // 10)  # pairs: a sensor and its write
    shell = (n - 2 * gated) * 3 // 8
    sql = n - 2 * gated - shell
    out = [TaskPlan("fail_planned", "sql", ["SELECT 1 / 0"])]
    out += [TaskPlan(f"sql_{i:03d}", "sql", sql_commands(i)) for i in range(1, sql)]
    out += [TaskPlan(f"shell_{i:03d}", "shell", [shell_command(i)]) for i in range(shell)]
    for i in range(gated):
        out.append(TaskPlan(f"approve_{i:03d}", "approve"))
        out.append(TaskPlan(f"write_{i:03d}", "write", [write_command(i)], f"approve_{i:03d}"))
    return out
