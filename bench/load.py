"""Load (issue #8): a real Airflow runs 200+ governed tasks, then the same DAG with stock operators.

Everything real: the embedded stack (Postgres, OpenBao) with the gateway running ``--workers``
processes (default 2), and Airflow's api-server, scheduler, dag-processor and triggerer with the
LocalExecutor at parallelism 16 (metadata in the stack's Postgres). One plan
(bench/dags/load_plan.py), two DAGs (bench/dags/load_dag_{governed,stock}.py):

- ``bench_load_governed``: SQL through the gateway (HoopPostgresOperator and the stock
  SQLExecuteQueryOperator on the hoop_postgres connection), HoopShellOperator, and writes gated
  by a HoopApprovalSensor; this script approves each review as ``alice`` through the UI
  plugin's endpoint as soon as it appears (the approval rule for this DAG is added to the
  stack's gateway settings before the gateway starts).
- ``bench_load_stock``: SQLExecuteQueryOperator on a plain postgres connection with a static
  user, BashOperator with that user in PG* variables, the gated writes without approval (an
  EmptyOperator in the sensor's place).

After the governed run it checks (bench/load_checks.py): every statement exactly once in the
ledger under its own task; no shared database user; every dynamic user and step Vault token
revoked; ``audit verify`` passes; only the planned task failed. It reports wall time (the
DAG run's start to end in Airflow), tasks per minute, the gateway's CPU and peak memory (all
its processes) and ledger records per second, and the governed / stock ratio (goal <= 1.10).

Usage: python bench/load.py [--tasks 240] [--parallelism 16] [--gateway-workers 2]
                            [--order stock,governed] [--json bench/results/load.json]
"""

from __future__ import annotations

import argparse
import json
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

from load_checks import Check, check_governed_run, ledger_records  # noqa: E402
from load_plan import GOVERNED_DAG, STOCK_DAG, WRITES_TABLE, TaskPlan, plan  # noqa: E402
from results_model import BenchReport, BenchRow, BenchTable, Machine  # noqa: E402

STATIC_USER = "bench_load_static"
APPROVER = "alice"
GOAL_RATIO = 1.10


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
    """CPU seconds and peak RSS of a process tree (the gateway and its workers), sampled."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.peak_rss = 0
        self.pids: set[int] = set()
        self._done = threading.Event()
        self.sample()

    def sample(self) -> None:
        rss = 0
        # The server and its workers: the workers' own children (shell commands) come and go,
        # and what they used is in the workers' children_* times once reaped.
        try:
            procs = [self.root, *self.root.children(recursive=False)]
        except psutil.NoSuchProcess:
            procs = [self.root]
        for proc in procs:
            try:
                times = proc.cpu_times()
                cpu = times.user + times.system + times.children_user + times.children_system
                rss += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            self.first.setdefault(proc.pid, cpu)
            self.last[proc.pid] = cpu
            self.pids.add(proc.pid)
        self.peak_rss = max(self.peak_rss, rss)

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.sample()

    def finish(self) -> tuple[float, float, int]:
        self._done.set()
        self.join()
        self.sample()
        cpu = sum(self.last[p] - self.first[p] for p in self.last)
        return cpu, self.peak_rss / 2**20, len(self.pids)


class Approver(threading.Thread):
    """Approves every pending review of a run as a person would: the plugin's decide endpoint."""

    def __init__(self, af: AirflowServices, info: StackInfo, run_id: str) -> None:
        super().__init__(daemon=True)
        self.af, self.info, self.run_id = af, info, run_id
        self.decided: set[str] = set()
        self.errors: list[str] = []
        self._done = threading.Event()

    def run(self) -> None:
        gateway = httpx.Client(
            base_url=self.info.gateway_url,
            headers={"Authorization": f"Bearer {self.info.auditor_api_key}"},
            trust_env=False,
            timeout=30,
        )
        with gateway, self.af.client(APPROVER) as api:
            while not self._done.wait(1.0):
                reviews = gateway.get(
                    "/api/reviews", params={"run_id": self.run_id, "limit": 500}
                ).json()
                for review in reviews:
                    if review["status"] != "PENDING" or review["id"] in self.decided:
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
                    if answer.status_code == 303:
                        self.decided.add(review["id"])
                    else:
                        self.errors.append(f"{answer.status_code}: {answer.text[:200]}")

    def finish(self) -> int:
        self._done.set()
        self.join()
        return len(self.decided)


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
    # The approver needs the run id: it starts right after the trigger.
    run_id = af.trigger(GOVERNED_DAG)
    approver = Approver(af, info, run_id)
    approver.start()
    try:
        wall = _wait_run(af, GOVERNED_DAG, run_id, timeout)
    finally:
        approvals = approver.finish()
        cpu, peak, procs = sampler.finish()
    after = len(ledger_records(info))
    if approver.errors:
        print(f"  approval errors: {approver.errors[:3]}")
    return RunResult(
        dag_id=GOVERNED_DAG,
        run_id=run_id,
        wall_s=wall,
        states=task_states(af, GOVERNED_DAG, run_id),
        gateway_cpu_s=cpu,
        gateway_peak_rss_mib=peak,
        gateway_processes=procs,
        ledger_records=after - before,
        approvals=approvals,
    )


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


def run_stock(af: AirflowServices, timeout: float) -> RunResult:
    run_id = af.trigger(STOCK_DAG)
    wall = _wait_run(af, STOCK_DAG, run_id, timeout)
    return RunResult(
        dag_id=STOCK_DAG, run_id=run_id, wall_s=wall, states=task_states(af, STOCK_DAG, run_id)
    )


# -- the whole benchmark ------------------------------------------------------------------------
class LoadOutcome(BaseModel):
    tasks: int
    parallelism: int
    gateway_workers: int
    governed: RunResult
    stock: RunResult | None = None
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def run_load(
    tasks: int,
    *,
    parallelism: int = 16,
    workers: int = 2,
    order: tuple[str, ...] = ("stock", "governed"),
    revoke_wait_s: float = 60.0,
) -> LoadOutcome:
    """Bring everything up, run the DAGs in ``order``, check the governed run, tear down."""
    the_plan: list[TaskPlan] = plan(tasks)
    timeout = 600 + 10 * tasks
    info = stack.up(gateway=False)
    root = Path(tempfile.mkdtemp(prefix="bench-load-"))
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
            runs: dict[str, RunResult] = {}
            for which in order:
                print(f"{which} run of {len(the_plan)} tasks...", flush=True)
                runs[which] = (
                    run_governed(af, info, timeout)
                    if which == "governed"
                    else run_stock(af, timeout)
                )
                print(f"  {runs[which].wall_s:.1f} s", flush=True)
            print("checks of the governed run:", flush=True)
            checks = check_governed_run(
                info,
                runs["governed"].run_id,
                the_plan,
                runs["governed"].states,
                revoke_wait_s=revoke_wait_s,
            )
            if "stock" in runs:
                stock_failed = {t for t, s in runs["stock"].states.items() if s != "success"}
                checks.append(
                    Check(
                        name="stock run: only the planned failure",
                        ok=stock_failed == {"fail_planned"},
                        detail=f"not successful: {sorted(stock_failed)[:8]}",
                    )
                )
    finally:
        stack.down(info)
        shutil.rmtree(root, ignore_errors=True)
    return LoadOutcome(
        tasks=len(the_plan),
        parallelism=parallelism,
        gateway_workers=workers,
        governed=runs["governed"],
        stock=runs.get("stock"),
        checks=checks,
    )


def report(outcome: LoadOutcome, command: str, machine: Machine) -> BenchReport:
    gov, stock = outcome.governed, outcome.stock
    rows = [
        BenchRow(what="governed DAG wall time", unit="s", value=gov.wall_s, n=1),
        BenchRow(what="governed tasks per minute", unit="tasks/min", value=gov.tasks_per_minute),
        BenchRow(
            what="gateway CPU (all processes)",
            unit="CPU-s",
            value=gov.gateway_cpu_s,
            note=f"{gov.gateway_processes} processes, {outcome.gateway_workers} workers",
        ),
        BenchRow(
            what="gateway peak memory (sum of RSS)", unit="MiB", value=gov.gateway_peak_rss_mib
        ),
        BenchRow(
            what="ledger records per second",
            unit="records/s",
            value=(gov.ledger_records or 0) / gov.wall_s,
            note=f"{gov.ledger_records} records",
        ),
    ]
    if stock is not None:
        ratio = gov.wall_s / stock.wall_s
        rows += [
            BenchRow(what="stock DAG wall time", unit="s", value=stock.wall_s, n=1),
            BenchRow(what="stock tasks per minute", unit="tasks/min", value=stock.tasks_per_minute),
            BenchRow(
                what="governed / stock wall time",
                unit="ratio",
                value=ratio,
                goal=f"<= {GOAL_RATIO:.2f}",
                met=ratio <= GOAL_RATIO,
            ),
        ]
    check_rows = [
        BenchRow(what=c.name, unit="check", value=float(c.ok), met=c.ok, note=c.detail)
        for c in outcome.checks
    ]
    return BenchReport(
        benchmark="load",
        issue="#8 [proof]",
        command=command,
        machine=machine,
        tables=[
            BenchTable(
                title=f"Load: {outcome.tasks} tasks, LocalExecutor parallelism "
                f"{outcome.parallelism}, gateway {outcome.gateway_workers} workers",
                rows=rows,
            ),
            BenchTable(title="Load: checks of the governed run", rows=check_rows),
        ],
        notes=[
            "One run of each DAG per invocation (wall time of a 200-task DAG run; not a median).",
            "Stock gated writes run without approval (EmptyOperator in the sensor's place); the "
            "governed run pays the approval round trip (script approves via the plugin as soon "
            "as the review appears; trigger poll interval 5 s).",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=240, help="task instances per DAG")
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--gateway-workers", type=int, default=2)
    parser.add_argument("--order", default="stock,governed", help="runs, in this order")
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
        revoke_wait_s=args.revoke_wait,
    )
    result = report(outcome, "python " + " ".join(sys.argv), machine)
    for table in result.tables:
        print(table.title)
        for row in table.rows:
            value = "" if row.value is None else f"{row.value:.2f} {row.unit}"
            goal = f"  (goal {row.goal}: {'met' if row.met else 'NOT met'})" if row.goal else ""
            print(f"  {row.what}: {value}{goal}" + (f"  [{row.note}]" if row.note else ""))
    print(f"machine: {machine.describe()}, load average at start {machine.load_average_at_start}")
    print(f"benchmark took {time.monotonic() - started:.0f} s")
    if args.json:
        result.write(args.json)
    sys.exit(0 if outcome.ok else 1)


if __name__ == "__main__":
    main()
