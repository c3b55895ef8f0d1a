"""What bench/load.py checks after the governed run (also run at tiny size by
tests/unit/test_load_dag.py).

Each check reads the real systems: the ledger through the gateway's auditor API, ``pg_roles``
in the target database, token accessors in OpenBao, ``airflow-hoop audit verify`` as a
subprocess, and the task states from Airflow's API.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import hvac
import psycopg
import requests
from load_plan import GOVERNED_DAG, PLANNED_FAILURES, TaskPlan
from pydantic import BaseModel

from airflow_hoop.cli.demo import read_ledger
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.records import CredentialIssued, CredentialRevoked, LedgerRecord
from airflow_hoop.ledger.steps import StepView, steps_from_records

_TX_CONTROL = {"COMMIT", "ROLLBACK"}


class Check(BaseModel):
    """One property of the run: held or not, and what was seen."""

    name: str
    ok: bool
    detail: str


def _ledger(info: StackInfo, run_id: str) -> tuple[list[LedgerRecord], list[StepView]]:
    records = [LedgerRecord.model_validate_json(r.body) for r in read_ledger(info)]
    mine = [
        r for r in records if r.step and r.step.dag_id == GOVERNED_DAG and r.step.run_id == run_id
    ]
    return mine, steps_from_records(mine)


def statements_once(plan: list[TaskPlan], views: list[StepView]) -> Check:
    """Every planned command of every task is in the ledger exactly once, under that task."""
    by_task: dict[str, list[StepView]] = defaultdict(list)
    for view in views:
        by_task[view.step.task_id].append(view)
    problems = []
    total = 0
    for task in plan:
        if not task.commands:  # a sensor: it asks for a review, runs nothing
            continue
        seen = Counter(
            s.script.strip()
            for v in by_task.get(task.task_id, [])
            for s in v.statements
            if s.script.strip().upper() not in _TX_CONTROL  # the DB-API hook's own COMMIT
        )
        want = Counter(c.strip() for c in task.commands)
        total += sum(seen.values())
        if seen != want:
            problems.append(f"{task.task_id}: ledger {dict(seen)} != planned {dict(want)}")
        if len(by_task.get(task.task_id, [])) > 1:
            problems.append(f"{task.task_id}: {len(by_task[task.task_id])} step identities")
    extra = set(by_task) - {t.task_id for t in plan}
    if extra:
        problems.append(f"steps not in the plan: {sorted(extra)}")
    detail = f"{total} statements of {len(plan)} tasks" if not problems else "; ".join(problems[:5])
    return Check(
        name="every statement exactly once, under its task", ok=not problems, detail=detail
    )


def users_not_shared(views: list[StepView]) -> Check:
    owners: dict[str, set[str]] = defaultdict(set)
    for view in views:
        for user in view.db_users:
            owners[user].add(view.step.key)
    shared = {u: s for u, s in owners.items() if len(s) > 1}
    return Check(
        name="no two steps shared a database user",
        ok=not shared and bool(owners),
        detail=f"{len(owners)} users, {len(shared)} shared" + (f": {shared}" if shared else ""),
    )


def _credentials_closed(
    info: StackInfo, records: list[LedgerRecord]
) -> tuple[set[str], set[str], list[str]]:
    issued = {
        r.body.lease_id: r.body.db_user for r in records if isinstance(r.body, CredentialIssued)
    }
    revoked = {r.body.lease_id for r in records if isinstance(r.body, CredentialRevoked)}
    users = list(issued.values())
    with psycopg.connect(info.admin_dsn(info.warehouse_db)) as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (users,))
        alive = [str(row[0]) for row in rows.fetchall()]
    return set(issued), revoked, alive


def _live_step_tokens(info: StackInfo, run_id: str) -> list[str]:
    session = requests.Session()
    session.trust_env = False
    root = hvac.Client(url=info.bao_addr, token=info.bao_root_token, session=session)
    live = []
    for accessor in root.list("auth/token/accessors")["data"]["keys"]:
        try:
            meta = root.lookup_token(accessor, accessor=True)["data"].get("meta") or {}
        except hvac.exceptions.InvalidRequest:  # expired between list and lookup
            continue
        if meta.get("dag_id") == GOVERNED_DAG and meta.get("run_id") in (None, run_id):
            live.append(str(meta.get("task_id")))
    return live


def credentials_revoked(info: StackInfo, run_id: str, wait_s: float) -> tuple[Check, Check]:
    """Every dynamic user revoked (ledger and pg_roles) and no step Vault token alive.

    Polls up to ``wait_s``: a step's end releases what it holds at once, but what another
    gateway worker holds for it goes at that worker's idle reaper; the time it took is shown.
    """
    started = time.monotonic()
    while True:
        records, _ = _ledger(info, run_id)
        issued, revoked, alive = _credentials_closed(info, records)
        tokens = _live_step_tokens(info, run_id)
        done = issued <= revoked and not alive and not tokens
        if done or time.monotonic() - started > wait_s:
            break
        time.sleep(2)
    took = time.monotonic() - started
    users = Check(
        name="every dynamic database user revoked",
        ok=bool(issued) and issued <= revoked and not alive,
        detail=f"{len(issued)} issued, {len(issued & revoked)} revoked in the ledger, "
        f"{len(alive)} still in pg_roles (after {took:.0f} s)"
        + (f": {alive[:3]}" if alive else ""),
    )
    vault = Check(
        name="every step's Vault token revoked",
        ok=not tokens,
        detail=f"{len(tokens)} live step tokens" + (f": {sorted(tokens)[:5]}" if tokens else ""),
    )
    return users, vault


def audit_verify(info: StackInfo) -> Check:
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_hoop.cli.main", "audit", "verify", "--stack", info.run_dir],
        capture_output=True,
        text=True,
        timeout=600,
    )
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return Check(
        name="audit verify passes",
        ok=proc.returncode == 0,
        detail=f"exit {proc.returncode}: {last}",
    )


def only_planned_failures(states: dict[str, str | None], plan: list[TaskPlan]) -> Check:
    failed = {t for t, s in states.items() if s != "success"}
    missing = {t.task_id for t in plan} - set(states)
    ok = failed == set(PLANNED_FAILURES) and not missing
    detail = f"{len(states)} tasks; not successful: {sorted(failed)[:8]}" + (
        f"; missing {sorted(missing)[:5]}" if missing else ""
    )
    return Check(name="no task failed except the planned ones", ok=ok, detail=detail)


def check_governed_run(
    info: StackInfo,
    run_id: str,
    plan: list[TaskPlan],
    states: dict[str, str | None],
    *,
    revoke_wait_s: float = 60.0,
    log: Callable[[str], None] = print,
) -> list[Check]:
    """All checks of issue #8's load section, printed as they complete."""
    _, views = _ledger(info, run_id)
    checks = [
        only_planned_failures(states, plan),
        statements_once(plan, views),
        users_not_shared(views),
    ]
    checks += credentials_revoked(info, run_id, revoke_wait_s)
    checks.append(audit_verify(info))
    for check in checks:
        log(f"  [{'ok' if check.ok else 'FAILED'}] {check.name}: {check.detail}")
    return checks


def ledger_records(info: StackInfo) -> list[LedgerRecord]:
    """Every record of the ledger (to count what a run appended)."""
    return [LedgerRecord.model_validate_json(r.body) for r in read_ledger(info)]
