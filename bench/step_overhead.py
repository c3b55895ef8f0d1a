"""What governing a step costs: the same one-statement step, governed and direct.

Governed: identity login (JWT auth) + Vault identity token + gateway + dynamic database user
+ ledger records + revoke (gateway) + Vault token revoke. Direct: psycopg with a static user
(connect, statement, close). Both in this one process, interleaved, against the same
embedded stack. Then the marginal cost of further statements within one open step.

Usage: python bench/step_overhead.py [-n 200] [--statements 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import psycopg

from airflow_hoop.devstack import stack
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.hooks.dbapi import GatewayConnection
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.step_session import GovernedStep, HoopConnectionConfig
from airflow_hoop.vault import StepVaultConfig

STATIC_PASSWORD = "bench-static-password"
SQL = "SELECT count(*) FROM pg_class"


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(ordered), "median_ms": statistics.median(ordered), "p95_ms": p95}


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def config_for(info: StackInfo) -> HoopConnectionConfig:
    return HoopConnectionConfig(
        gateway_url=info.gateway_url,
        vault=StepVaultConfig(
            url=info.bao_addr,
            auth="jwt",
            jwt_role=info.jwt_role,
            jwt_issuer=info.jwt_issuer,
            workload_key_path=info.workload_key_path,
            identity_role=info.identity_role,
        ),
    )


def governed_step(config: HoopConnectionConfig, i: int, parts: dict[str, list[float]]) -> float:
    step = GovernedStep(
        config, StepRef(dag_id="bench_overhead", task_id="one", run_id="bench", try_number=i)
    )
    t0 = time.perf_counter()
    parts["vault login"].append(timed(step.vault.login))
    parts["identity token"].append(timed(step.vault.identity_token))
    conn = GatewayConnection(step, "warehouse")
    conn.autocommit = True
    parts["gateway exec (1st: creds + connect + ledger)"].append(
        timed(lambda: conn.cursor().execute(SQL).fetchall())
    )
    parts["end step (gateway revoke + Vault revoke)"].append(timed(step.end))
    return (time.perf_counter() - t0) * 1000


def direct_step(dsn: str) -> float:
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SQL).fetchall()
    return (time.perf_counter() - t0) * 1000


def further_statements(
    config: HoopConnectionConfig, dsn: str, count: int
) -> tuple[list[float], list[float]]:
    step = GovernedStep(config, StepRef(dag_id="bench_overhead", task_id="many", run_id="bench"))
    conn = GatewayConnection(step, "warehouse")
    conn.autocommit = True
    conn.cursor().execute(SQL)  # first statement pays for the credential
    governed, direct = [], []
    with psycopg.connect(dsn, autocommit=True) as pg:
        for _ in range(count):
            governed.append(timed(lambda: conn.cursor().execute(SQL).fetchall()))
            direct.append(timed(lambda: pg.execute(SQL).fetchall()))
    step.end()
    return governed, direct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="steps of each kind (default 200)")
    parser.add_argument(
        "--statements", type=int, default=200, help="further statements in one step"
    )
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()

    with stack.running_stack() as info:
        with psycopg.connect(info.admin_dsn(info.warehouse_db), autocommit=True) as admin:
            admin.execute(f"CREATE ROLE bench_static LOGIN PASSWORD '{STATIC_PASSWORD}'")
        dsn = f"host=127.0.0.1 port={info.pg_port} dbname={info.warehouse_db} user=bench_static password={STATIC_PASSWORD}"
        config = config_for(info)
        parts: dict[str, list[float]] = defaultdict(list)
        for i in range(args.warmup):
            governed_step(config, 100_000 + i, defaultdict(list))
            direct_step(dsn)
        governed, direct = [], []
        for i in range(args.n):  # interleaved so drift hits both sides alike
            governed.append(governed_step(config, i + 1, parts))
            direct.append(direct_step(dsn))
        more_governed, more_direct = further_statements(config, dsn, args.statements)

    results = {
        "machine": f"{platform.node()} {platform.machine()}, {__import__('os').cpu_count()} cores",
        "python": platform.python_version(),
        "governed step": stats(governed),
        "direct step": stats(direct),
        "added per step (median)": statistics.median(governed) - statistics.median(direct),
        "breakdown": {k: stats(v) for k, v in parts.items()},
        "further statement, governed": stats(more_governed),
        "further statement, direct": stats(more_direct),
        "added per further statement (median)": statistics.median(more_governed)
        - statistics.median(more_direct),
    }
    print(f"machine: {results['machine']}, python {results['python']}")
    print(f"{'what':55} {'n':>5} {'median ms':>10} {'p95 ms':>9}")
    rows = [("governed step", results["governed step"]), ("direct step", results["direct step"])]
    rows += [(f"  {k}", v) for k, v in results["breakdown"].items()]
    rows += [
        ("further statement, governed", results["further statement, governed"]),
        ("further statement, direct", results["further statement, direct"]),
    ]
    for name, s in rows:
        print(f"{name:55} {s['n']:>5} {s['median_ms']:>10.2f} {s['p95_ms']:>9.2f}")
    print(f"added per step (median): {results['added per step (median)']:.2f} ms (goal <= 60)")
    print(
        f"added per further statement (median): {results['added per further statement (median)']:.2f} ms (goal <= 5)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
