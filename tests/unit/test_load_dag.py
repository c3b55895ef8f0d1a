"""bench/load.py's plan and checks.

The checks must be able to fail: each is fed the ledger view of a consistent run (passes) and of
a run with one defect (fails, naming it). The views are the ledger's own models, built as
``steps_from_records`` builds them; no system is mocked, there is none in these tests.

The full loop (real Airflow, gateway with 2 workers, approvals, every check against the real
systems) costs 2-3 minutes even at 8 tasks (Airflow's four processes start in ~30 s, every task
is a process of its own) - above the 60 s budget of the default suite - so it runs only with
``AIRFLOW_HOOP_LOAD_TEST=1``, and ``python bench/load.py --tasks 20`` is the quick manual check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path[:0] = [str(BENCH), str(BENCH / "dags")]

from load_checks import only_planned_failures, statements_once, users_not_shared  # noqa: E402
from load_plan import GOVERNED_DAG, TaskPlan, plan  # noqa: E402

from airflow_hoop.ledger.records import StepRef  # noqa: E402
from airflow_hoop.ledger.steps import StatementView, StepView  # noqa: E402

RUN = "manual__test"


def _views(the_plan: list[TaskPlan]) -> list[StepView]:
    """The ledger view of a run that did exactly what the plan says, one user per step."""
    views = []
    seq = 0
    for task in the_plan:
        if not task.commands:
            continue
        user = f"af_{task.task_id}"
        statements = []
        for command in task.commands:
            seq += 1
            statements.append(
                StatementView(
                    session_id=f"s{seq}",
                    connection="warehouse",
                    script=command,
                    db_user=user,
                    intent_seq=seq,
                )
            )
        views.append(
            StepView(
                step=StepRef(dag_id=GOVERNED_DAG, task_id=task.task_id, run_id=RUN),
                statements=statements,
                db_users=[user],
            )
        )
    return views


def test_plan_has_every_kind_and_traceable_commands() -> None:
    the_plan = plan(240)
    kinds = [t.kind for t in the_plan]
    assert len(the_plan) == 240
    assert kinds.count("approve") == kinds.count("write") == 24
    assert kinds.count("shell") == 72
    assert len({t.task_id for t in the_plan}) == 240
    commands = [c for t in the_plan for c in t.commands]
    assert len(commands) == len(set(commands)), "a command would not name its task"
    assert all(t.gated_by in {a.task_id for a in the_plan} for t in the_plan if t.gated_by)
    with pytest.raises(ValueError, match="at least 6"):
        plan(5)


def test_statements_once_passes_on_the_plan_and_names_each_defect() -> None:
    the_plan = plan(20)
    views = _views(the_plan)
    assert statements_once(the_plan, views).ok

    missing = _views(the_plan)
    missing[1].statements.pop()
    check = statements_once(the_plan, missing)
    assert not check.ok and missing[1].step.task_id in check.detail

    twice = _views(the_plan)
    twice[2].statements.append(twice[2].statements[0])
    check = statements_once(the_plan, twice)
    assert not check.ok and twice[2].step.task_id in check.detail

    # Right text, wrong identity: task B's statement recorded under task A.
    moved = _views(the_plan)
    moved[3].statements.append(moved[4].statements.pop())
    assert not statements_once(the_plan, moved).ok

    retried = _views(the_plan)
    retried.append(
        retried[0].model_copy(update={"step": retried[0].step.model_copy(update={"try_number": 2})})
    )
    check = statements_once(the_plan, retried)
    assert not check.ok and "step identities" in check.detail


def test_users_not_shared_detects_a_shared_user() -> None:
    views = _views(plan(8))
    assert users_not_shared(views).ok
    views[1].db_users.append(views[0].db_users[0])
    check = users_not_shared(views)
    assert not check.ok and views[0].db_users[0] in check.detail
    assert not users_not_shared([]).ok  # no user at all: nothing ran through the gateway


def test_only_planned_failures() -> None:
    the_plan = plan(8)
    states: dict[str, str | None] = {t.task_id: "success" for t in the_plan}
    states["fail_planned"] = "failed"
    assert only_planned_failures(states, the_plan).ok
    states["sql_001"] = "upstream_failed"
    assert not only_planned_failures(states, the_plan).ok
    states["sql_001"] = "success"
    del states["shell_000"]
    assert not only_planned_failures(states, the_plan).ok
    states = {t.task_id: "success" for t in the_plan}  # the planned failure did not fail
    assert not only_planned_failures(states, the_plan).ok


@pytest.mark.airflow
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    not os.environ.get("AIRFLOW_HOOP_LOAD_TEST"),
    reason="2-3 min with real Airflow: set AIRFLOW_HOOP_LOAD_TEST=1 (see module docstring)",
)
def test_tiny_governed_load_run_passes_every_check() -> None:
    from load import run_load

    outcome = run_load(8, parallelism=16, workers=2, order=("governed",))
    (only,) = outcome.rounds
    assert outcome.ok, [c for c in only.checks if not c.ok]
    assert only.governed.approvals == 1
    assert only.governed.gateway_processes and only.governed.gateway_processes >= 3
    # The CPU split saw the parts that did the work.
    assert only.governed.cpu is not None
    assert only.governed.cpu.parts["gateway"] > 0
    assert only.governed.cpu.parts["Airflow executor workers + tasks"] > 0
    assert only.governed.cpu.parts["PostgreSQL"] > 0
