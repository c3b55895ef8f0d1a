"""Load (issue #8): a real Airflow runs 200+ governed tasks, then the same DAG with stock operators.

Everything real: the embedded stack (Postgres, OpenBao) with the gateway running ``--workers``
processes (default 2), and Airflow's api-server, scheduler, dag-processor and triggerer with the
LocalExecutor at parallelism 16 (metadata in the stack's Postgres). One plan
(bench/dags/load_plan.py), two DAGs (bench/dags/load_dag_{governed,stock}.py):

- ``bench_load_governed``: SQL through the gateway (HoopPostgresOperator and the stock
  SQLExecuteQueryOperator on the hoop_postgres connection), HoopShellOperator, and writes gated
  by a HoopApprovalSensor; this script approves each review as ``alice`` through the UI
  plugin's endpoint (the approval rule for this DAG is added to the stack's gateway settings
  before the gateway starts).
- ``bench_load_stock``: SQLExecuteQueryOperator on a plain postgres connection with a static
  user, BashOperator with that user in PG* variables, and the writes gated by Airflow's own
  ``ApprovalOperator`` (human in the loop), which this script answers as ``alice`` through
  Airflow's HITL API. Both kinds of approval are answered ``ANSWER_AFTER_S`` after they appear.

A round runs both DAGs back to back (``--rounds N``: the order alternates); after each governed
run it checks (bench/load_checks.py): every statement exactly once in the ledger under its own
task; no shared database user; every dynamic user and step Vault token revoked; ``audit
verify`` passes; only the planned task failed; every approval answered. It reports wall time
(the DAG run's start to end in Airflow), tasks per minute, the gateway's CPU and peak memory
(all its processes), ledger records per second, the CPU seconds every part of the machine
spent during each run (bench/cpu_parts.py), and the governed / stock ratio per round (goal:
median <= 1.10).

Usage: python bench/load.py [--tasks 240] [--parallelism 16] [--gateway-workers 2]
                            [--order stock,governed] [--rounds 3]
                            [--json bench/results/load.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import psycopg
import yaml
from pydantic import BaseModel

from airflow_hoop.devstack import stack
from airflow_hoop.devstack.airflow_services import AirflowServices, running_airflow
from airflow_hoop.devstack.models import StackInfo

DAGS = Path(__file__).parent / "dags"
sys.path.insert(0, str(DAGS))  # load_plan.py: shared with the DAG file (copied next to it)

from cpu_parts import CpuSnapshot, snapshot  # noqa: E402
from load_checks import Check, check_governed_run, ledger_records  # noqa: E402
from load_plan import GOVERNED_DAG, STOCK_DAG, WRITES_TABLE, TaskPlan, plan  # noqa: E402
from results_model import (  # noqa: E402
    BenchReport,
    BenchRow,
    BenchTable,
    Machine,
    Stats,
    at_most,
)

STATIC_USER = "bench_load_static"
APPROVER = "alice"
GOAL_RATIO = 1.10
#: How long the script's "person" takes to answer an approval (both DAGs; see Approver).
ANSWER_AFTER_S = 3.0


class RunResult(BaseModel):
    """One DAG run: its wall time (Airflow's start to end) and its task states."""

    dag_id: str
    run_id: str
    wall_s: float
    states: dict[str, str | None]
    gateway_cpu_s: float | None = None
    gateway_peak_rss_mib: float | None = None
    gateway_processes: int | None = None
    ledger_records: int | None = None
    approvals: int = 0
    cpu: CpuSnapshot | None = None

    @property
    def tasks_per_minute(self) -> float:
        return 60 * len(self.states) / self.wall_s


# -- set-up -----------------------------------------------------------------------------------
def prepare_stack(info: StackInfo, workers: int) -> None:
    """Approval rule for the governed DAG's writes, the static user, the gated writes' table;
    then the gateway with ``workers`` processes."""
    path = Path(info.gateway_settings_path)
    settings = yaml.safe_load(path.read_text())
    warehouse = next(c for c in settings["connections"] if c["name"] == stack.WAREHOUSE_CONNECTION)
    # SQL writes only (the shell connection keeps its rules): shell tasks run ungated.
    warehouse["approvals"] = [
        {
            "name": "load-writes",
            "required_for": "writes",
            "dags": [GOVERNED_DAG],
            "groups": [stack.APPROVER_GROUP],
        },
        *warehouse.get("approvals", []),
    ]
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    with psycopg.connect(info.admin_dsn(info.warehouse_db), autocommit=True) as conn:
        conn.execute(
            f"CREATE ROLE {STATIC_USER} LOGIN PASSWORD '{static_password(info)}' "
            "IN ROLE warehouse_writer"
        )
        conn.execute(f"ALTER ROLE {STATIC_USER} SET role TO 'warehouse_writer'")
        conn.execute(f"CREATE TABLE {WRITES_TABLE} (task_number int, at timestamptz DEFAULT now())")
        conn.execute(f"ALTER TABLE {WRITES_TABLE} OWNER TO warehouse_writer")
    stack.start_gateway(info, workers=workers)


def static_password(info: StackInfo) -> str:
    # Throwaway stack: derived from its random root token, never printed.
    return "static-" + info.bao_root_token[:16]


def airflow_overrides(info: StackInfo, tasks: int, parallelism: int) -> dict[str, str]:
    """Parallelism, the DAG size, and the stock DAG's static connection and PG* variables."""
    password = static_password(info)
    static = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": info.pg_port,
        "login": STATIC_USER,
        "password": password,
        "schema": info.warehouse_db,
    }
    return {
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
        "BENCH_LOAD_TASKS": str(tasks),
        "AIRFLOW_CONN_WAREHOUSE_STATIC": json.dumps(static),
        "PGHOST": "127.0.0.1",
        "PGPORT": str(info.pg_port),
        "PGUSER": STATIC_USER,
        "PGPASSWORD": password,
        "PGDATABASE": info.warehouse_db,
    }


# -- measuring ----------------------------------------------------------------------------------
class ProcessSampler(threading.Thread):
    """Peak RSS (sum over its processes) of a process tree (the gateway and its workers),
    sampled; its CPU comes from the run's CPU split (bench/cpu_parts.py)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.pids: set[int] = set()
        self._done = threading.Event()
        self.sample()

    def sample(self) -> None:
        rss = 0
        try:
            procs = [self.root, *self.root.children(recursive=False)]
        except psutil.NoSuchProcess:
            procs = [self.root]
        for proc in procs:
            try:
                rss += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            self.pids.add(proc.pid)
        self.peak_rss = max(self.peak_rss, rss)

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.sample()

    def finish(self) -> tuple[float, int]:
        self._done.set()
        self.join()
        self.sample()
        return self.peak_rss / 2**20, len(self.pids)


class Approver(threading.Thread):
    """Answers every waiting approval of a run as a person would, ``ANSWER_AFTER_S`` after
    first seeing it: the governed DAG's reviews through the UI plugin's endpoint (what the
    Approvals tab sends), the stock DAG's ``ApprovalOperator`` through Airflow's HITL API (what
    its Required Actions form sends), both as ``alice``, the same delay for both.

    On Airflow 3.3.2 an answer that re-queues an ``ApprovalOperator`` before the scheduler has
    processed the exit of its paused process makes the scheduler fail the task ("finished
    with state success, but the task instance's state attribute is queued"; its guard covers
    a resumed deferral only while the task is still ``scheduled``). Under load that can take
    longer than any fixed delay, so a HITL request is answered only once the scheduler's log
    shows that exit too (``PausedExits``). No person answers that fast; the delay is the same
    for both DAGs.
    """

    def __init__(self, af: AirflowServices, info: StackInfo, dag_id: str, run_id: str) -> None:
        super().__init__(daemon=True)
        self.af, self.info, self.dag_id, self.run_id = af, info, dag_id, run_id
        self.decided: set[str] = set()
        self.errors: list[str] = []
        self._seen: dict[str, float] = {}
        self._done = threading.Event()

    def _due(self, key: str) -> bool:
        """Not answered yet and waiting for ``ANSWER_AFTER_S`` since first seen."""
        first = self._seen.setdefault(key, time.monotonic())
        return key not in self.decided and time.monotonic() - first >= ANSWER_AFTER_S

    def run(self) -> None:
        with self.af.client(APPROVER) as api:
            if self.dag_id == GOVERNED_DAG:
                self._approve_reviews(api)
            else:
                self._approve_hitl(api)

    def _approve_reviews(self, api: httpx.Client) -> None:
        gateway = httpx.Client(
            base_url=self.info.gateway_url,
            headers={"Authorization": f"Bearer {self.info.auditor_api_key}"},
            trust_env=False,
            timeout=30,
        )
        with gateway:
            while not self._done.wait(1.0):
                reviews = gateway.get(
                    "/api/reviews", params={"run_id": self.run_id, "limit": 500}
                ).json()
                for review in reviews:
                    if review["status"] != "PENDING" or not self._due(review["id"]):
                        continue
                    answer = api.post(
                        f"/hoop/approvals/decide/{GOVERNED_DAG}/{review['id']}",
                        data={
                            "decision": "APPROVED",
                            "reason": "load benchmark",
                            "command_sha256": review["airflow_hoop"]["command_sha256"],
                        },
                        follow_redirects=False,
                    )
                    self._answered(review["id"], answer, 303)

    def _approve_hitl(self, api: httpx.Client) -> None:
        runs = f"/api/v2/dags/{self.dag_id}/dagRuns/{self.run_id}"
        paused = PausedExits(self.af.logs / "scheduler.log", self.dag_id, self.run_id)
        while not self._done.wait(1.0):
            exited = paused.read()
            waiting = api.get(
                f"{runs}/hitlDetails", params={"response_received": False, "limit": 500}
            ).json()
            for detail in waiting["hitl_details"]:
                ti = detail["task_instance"]
                if ti["state"] != "awaiting_input" or ti["task_id"] not in exited:
                    continue
                if not self._due(ti["task_id"]):
                    continue
                answer = api.patch(
                    f"{runs}/taskInstances/{ti['task_id']}/{ti['map_index']}/hitlDetails",
                    json={"chosen_options": ["Approve"], "params_input": {}},
                )
                self._answered(ti["task_id"], answer, 200)

    def _answered(self, key: str, answer: httpx.Response, expected: int) -> None:
        if answer.status_code == expected:
            self.decided.add(key)
        else:
            self.errors.append(f"{answer.status_code}: {answer.text[:200]}")

    def finish(self) -> int:
        self._done.set()
        self.join()
        return len(self.decided)


class PausedExits:
    """Tasks of a run whose paused process's exit the scheduler has processed (its log)."""

    def __init__(self, log: Path, dag_id: str, run_id: str) -> None:
        self.log, self.offset, self.tasks = log, 0, set[str]()
        self.pattern = re.compile(
            rf"TaskInstance Finished: dag_id={re.escape(dag_id)}, task_id=(\S+?), "
            rf"run_id={re.escape(run_id)},.* state=awaiting_input"
        )

    def read(self) -> set[str]:
        with self.log.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk.rfind(b"\n") + 1  # a line still being written waits for next time
        self.offset += complete
        for line in chunk[:complete].decode(errors="replace").splitlines():
            if match := self.pattern.search(line):
                self.tasks.add(match.group(1))
        return self.tasks


def task_states(af: AirflowServices, dag_id: str, run_id: str) -> dict[str, str | None]:
    """Every task instance's state (the API pages by 100)."""
    out: dict[str, str | None] = {}
    with af.client() as api:
        while True:
            page = api.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(out)},
            ).json()["task_instances"]
            out.update({t["task_id"]: t["state"] for t in page})
            if len(page) < 100:
                return out


def run_governed(af: AirflowServices, info: StackInfo, timeout: float) -> RunResult:
    before = len(ledger_records(info))
    sampler = ProcessSampler(info.gateway_pid or 0)
    sampler.start()
    try:
        run_id, wall, approvals, cpu_parts = run_approved(af, info, GOVERNED_DAG, timeout)
    finally:
        peak, procs = sampler.finish()
    after = len(ledger_records(info))
    return RunResult(
        dag_id=GOVERNED_DAG,
        run_id=run_id,
        wall_s=wall,
        states=task_states(af, GOVERNED_DAG, run_id),
        gateway_cpu_s=cpu_parts.parts["gateway"],
        gateway_peak_rss_mib=peak,
        gateway_processes=procs,
        ledger_records=after - before,
        approvals=approvals,
        cpu=cpu_parts,
    )


def run_approved(
    af: AirflowServices, info: StackInfo, dag_id: str, timeout: float
) -> tuple[str, float, int, CpuSnapshot]:
    """Trigger ``dag_id``, answer its approvals until the run ends: run id, wall time,
    approvals answered, CPU by part."""
    cpu_start = cpu_snapshot(af, info)
    # The approver needs the run id: it starts right after the trigger.
    run_id = af.trigger(dag_id)
    approver = Approver(af, info, dag_id, run_id)
    approver.start()
    try:
        wall = _wait_run(af, dag_id, run_id, timeout)
    finally:
        approvals = approver.finish()
    if approver.errors:
        print(f"  approval errors: {approver.errors[:3]}")
    return run_id, wall, approvals, cpu_snapshot(af, info).since(cpu_start)


def _wait_run(af: AirflowServices, dag_id: str, run_id: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    with af.client() as api:
        while True:
            run = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
            if run["state"] in ("success", "failed"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{dag_id} run {run_id} still {run['state']} after {timeout}s")
            time.sleep(1.0)
    start = datetime.fromisoformat(run["start_date"])
    end = datetime.fromisoformat(run["end_date"])
    return (end - start).total_seconds()


def run_stock(af: AirflowServices, info: StackInfo, timeout: float) -> RunResult:
    run_id, wall, approvals, cpu = run_approved(af, info, STOCK_DAG, timeout)
    return RunResult(
        dag_id=STOCK_DAG,
        run_id=run_id,
        wall_s=wall,
        states=task_states(af, STOCK_DAG, run_id),
        approvals=approvals,
        cpu=cpu,
    )


def cpu_snapshot(af: AirflowServices, info: StackInfo) -> CpuSnapshot:
    """CPU by part: Airflow's processes (the scheduler apart from its executor workers and
    their task processes), the gateway, this script; PostgreSQL and OpenBao by name."""
    roots = {f"Airflow {c}": p.pid for c, p in af.procs.items()}
    below = {"Airflow executor workers + tasks": roots["Airflow scheduler"]}
    return snapshot({**roots, "gateway": info.gateway_pid or 0, "this script": os.getpid()}, below)


# -- the whole benchmark ------------------------------------------------------------------------
class Round(BaseModel):
    """One governed run and (usually) one stock run, back to back, with the checks."""

    order: tuple[str, ...]
    governed: RunResult
    stock: RunResult | None = None
    checks: list[Check]

    @property
    def ratio(self) -> float | None:
        return None if self.stock is None else self.governed.wall_s / self.stock.wall_s


class LoadOutcome(BaseModel):
    tasks: int
    parallelism: int
    gateway_workers: int
    rounds: list[Round]

    @property
    def ok(self) -> bool:
        return all(c.ok for r in self.rounds for c in r.checks)


def round_orders(first: tuple[str, ...], rounds: int) -> list[tuple[str, ...]]:
    """``first``, then alternately reversed: a run's place (warm or cold, early or late in the
    life of the services) must not favour one DAG."""
    return [first if i % 2 == 0 else tuple(reversed(first)) for i in range(rounds)]


def run_load(
    tasks: int,
    *,
    parallelism: int = 16,
    workers: int = 2,
    order: tuple[str, ...] = ("stock", "governed"),
    rounds: int = 1,
    revoke_wait_s: float = 60.0,
) -> LoadOutcome:
    """Bring everything up, run ``rounds`` rounds of the DAGs, check every governed run."""
    the_plan: list[TaskPlan] = plan(tasks)
    timeout = 600 + 10 * tasks
    info = stack.up(gateway=False)
    root = Path(tempfile.mkdtemp(prefix="bench-load-"))
    done: list[Round] = []
    try:
        prepare_stack(info, workers)
        dags = root / "dags"
        dags.mkdir()
        for name in ("load_plan.py", "load_dag_governed.py", "load_dag_stock.py"):
            shutil.copy(DAGS / name, dags / name)
        overrides = airflow_overrides(info, tasks, parallelism)
        with running_airflow(root / "home", info, dags, **overrides) as af:
            af.wait_dag(GOVERNED_DAG, timeout=300)
            af.wait_dag(STOCK_DAG, timeout=300)
            for number, this_order in enumerate(round_orders(order, rounds), 1):
                done.append(
                    run_round(af, info, the_plan, this_order, timeout, revoke_wait_s, number)
                )
    finally:
        stack.down(info)
        shutil.rmtree(root, ignore_errors=True)
    return LoadOutcome(
        tasks=len(the_plan), parallelism=parallelism, gateway_workers=workers, rounds=done
    )


def run_round(
    af: AirflowServices,
    info: StackInfo,
    the_plan: list[TaskPlan],
    order: tuple[str, ...],
    timeout: float,
    revoke_wait_s: float,
    number: int,
) -> Round:
    runs: dict[str, RunResult] = {}
    for which in order:
        print(f"round {number}: {which} run of {len(the_plan)} tasks...", flush=True)
        runs[which] = (
            run_governed(af, info, timeout) if which == "governed" else run_stock(af, info, timeout)
        )
        print(f"  {runs[which].wall_s:.1f} s", flush=True)
    print(f"round {number}: checks of the governed run", flush=True)
    checks = check_governed_run(
        info,
        runs["governed"].run_id,
        the_plan,
        runs["governed"].states,
        revoke_wait_s=revoke_wait_s,
    )
    gates = sum(1 for t in the_plan if t.kind == "approve")
    answered = {which: run.approvals for which, run in runs.items()}
    checks.append(
        Check(
            name="every approval gate answered by the script",
            ok=all(n == gates for n in answered.values()),
            detail=f"{gates} gates per run; answered: {answered}",
        )
    )
    if "stock" in runs:
        stock_failed = {t: s for t, s in runs["stock"].states.items() if s != "success"}
        checks.append(
            Check(
                name="stock run: only the planned failure",
                ok=set(stock_failed) == {"fail_planned"},
                detail=f"not successful: {dict(sorted(stock_failed.items())[:8])}",
            )
        )
    return Round(order=order, governed=runs["governed"], stock=runs.get("stock"), checks=checks)


def report(outcome: LoadOutcome, command: str, machine: Machine) -> BenchReport:
    rounds = outcome.rounds
    govs = [r.governed for r in rounds]
    stocks = [r.stock for r in rounds if r.stock is not None]
    ratios = [r.ratio for r in rounds if r.ratio is not None]
    rows = [
        BenchRow.of("governed DAG wall time", "s", Stats.of([g.wall_s for g in govs])),
        BenchRow.of(
            "governed tasks per minute", "tasks/min", Stats.of([g.tasks_per_minute for g in govs])
        ),
        BenchRow.of(
            "gateway CPU (all processes)",
            "CPU-s",
            Stats.of([g.gateway_cpu_s or 0.0 for g in govs]),
            note=f"{govs[-1].gateway_processes} processes, {outcome.gateway_workers} workers",
        ),
        BenchRow.of(
            "gateway peak memory (sum of RSS)",
            "MiB",
            Stats.of([g.gateway_peak_rss_mib or 0.0 for g in govs]),
        ),
        BenchRow.of(
            "ledger records per second",
            "records/s",
            Stats.of([(g.ledger_records or 0) / g.wall_s for g in govs]),
            note=f"{govs[-1].ledger_records} records per run",
        ),
    ]
    if stocks:
        ratio = Stats.of(ratios)
        rows += [
            BenchRow.of("stock DAG wall time", "s", Stats.of([s.wall_s for s in stocks])),
            BenchRow.of(
                "stock tasks per minute",
                "tasks/min",
                Stats.of([s.tasks_per_minute for s in stocks]),
            ),
            BenchRow.of(
                "governed / stock wall time (per round)",
                "ratio",
                ratio,
                **at_most(ratio.median, GOAL_RATIO, "x", "median of the rounds"),
                note="rounds: " + ", ".join(f"{r:.2f}" for r in ratios),
            ),
        ]
    check_rows = [
        BenchRow(
            what=c.name,
            unit="check",
            value=float(ok),
            met=ok,
            note=f"{sum(1 for r in rounds if c.name in _passed(r))} of {len(rounds)} rounds; "
            + c.detail,
        )
        for c in rounds[-1].checks
        for ok in [all(c.name in _passed(r) for r in rounds)]
    ]
    return BenchReport(
        benchmark="load",
        issue="#8 [proof]",
        command=command,
        machine=machine,
        tables=[
            BenchTable(
                title=f"Load: {outcome.tasks} tasks, LocalExecutor parallelism "
                f"{outcome.parallelism}, gateway {outcome.gateway_workers} workers, "
                f"{len(rounds)} rounds",
                rows=rows,
            ),
            cpu_table(rounds),
            BenchTable(title="Load: checks of every governed run", rows=check_rows),
        ],
        notes=[
            "Wall time: a DAG run's start to end in Airflow; N = rounds. Each round runs both "
            "DAGs back to back, the order alternating from round to round.",
            "Approvals: HoopApprovalSensor (governed; the trigger polls every second and ends "
            "the sensor in the triggerer) and Airflow's ApprovalOperator (stock; the task "
            f"waits in awaiting_input and a worker resumes it), each answered by this script "
            f"as alice {ANSWER_AFTER_S:g} s after it appears.",
        ],
    )


def _passed(r: Round) -> set[str]:
    return {c.name for c in r.checks if c.ok}


def cpu_table(rounds: list[Round]) -> BenchTable:
    """Median CPU seconds per part during the runs: where a governed run spends more."""
    parts = sorted({p for r in rounds for p in (r.governed.cpu.parts if r.governed.cpu else {})})
    rows = []
    for part in [*parts, "machine (all busy time)"]:
        for label, runs in (("governed", [r.governed for r in rounds]), ("stock", _stocks(rounds))):
            samples = [_cpu_of(run, part) for run in runs if run.cpu is not None]
            if samples:
                rows.append(BenchRow.of(f"{part}: {label} run", "CPU-s", Stats.of(samples)))
    return BenchTable(title="Load: CPU seconds by part during each DAG run", rows=rows)


def _stocks(rounds: list[Round]) -> list[RunResult]:
    return [r.stock for r in rounds if r.stock is not None]


def _cpu_of(run: RunResult, part: str) -> float:
    assert run.cpu is not None
    if part.startswith("machine"):
        return run.cpu.machine_busy_s
    return run.cpu.parts.get(part, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=240, help="task instances per DAG")
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--gateway-workers", type=int, default=2)
    parser.add_argument("--order", default="stock,governed", help="runs, in this order")
    parser.add_argument("--rounds", type=int, default=1, help="governed + stock rounds")
    parser.add_argument("--revoke-wait", type=float, default=60.0, help="seconds (see checks)")
    parser.add_argument("--json", type=Path, help="write the BenchReport here")
    args = parser.parse_args()
    order = tuple(w.strip() for w in args.order.split(",") if w.strip())
    if "governed" not in order or not set(order) <= {"governed", "stock"}:
        parser.error("--order names governed and optionally stock")
    started, machine = time.monotonic(), Machine.here()
    outcome = run_load(
        args.tasks,
        parallelism=args.parallelism,
        workers=args.gateway_workers,
        order=order,
        rounds=args.rounds,
        revoke_wait_s=args.revoke_wait,
    )
    result = report(outcome, "python " + " ".join(sys.argv), machine)
    for table in result.tables:
        print(table.title)
        for row in table.rows:
            shown = row.median if row.median is not None else row.value
            value = "" if shown is None else f"{shown:.2f} {row.unit}"
            if row.p95 is not None and row.n and row.n > 1:
                value += f" (p95 {row.p95:.2f}, N={row.n})"
            goal = f"  (goal {row.goal}: {'met' if row.met else 'NOT met'})" if row.goal else ""
            print(f"  {row.what}: {value}{goal}" + (f"  [{row.note}]" if row.note else ""))
    print(f"machine: {machine.describe()}, load average at start {machine.load_average_at_start}")
    print(f"benchmark took {time.monotonic() - started:.0f} s")
    if args.json:
        result.write(args.json)
    sys.exit(0 if outcome.ok else 1)


if __name__ == "__main__":
    main()
