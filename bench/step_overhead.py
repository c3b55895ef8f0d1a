"""What governing a step costs: the same one-statement step, governed and direct.

Governed: identity login (JWT auth) + Vault identity token + gateway + dynamic database user
+ ledger records + step end (the gateway closes the step's connection and starts revoking its
user, which it records right after: ``revoke_at_end`` background, GovernedStep's default)
+ Vault token revoke. Direct: psycopg with a static user (connect, statement, close). Both in
this one process, interleaved, against the same embedded stack. Then the marginal cost of
further statements within one open step. Goals (#2): at most +60 ms per step and +5 ms per
further statement, at the median; #15: a further statement that runs read-only (an unapproved
read under a ``required_for: writes`` rule: the READ user, the gateway's read-only transaction,
its guard, all pipelined) adds at most 3.5 ms.

Usage: python bench/step_overhead.py [-n 200] [--statements 200] [--revoke-at-end wait]
       [--json bench/results/step_overhead.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from issuer_round_trip import issuer_round_trips
from results_model import BenchReport, BenchRow, BenchTable, Machine, at_most, command

from airflow_hoop.devstack import stack
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.hooks.dbapi import GatewayConnection
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.task.step_session import GovernedStep, HoopConnectionConfig
from airflow_hoop.task.vault_config import StepVaultConfig
from airflow_hoop.wire.sessions import RevokeMode

STATIC_PASSWORD = "bench-static-password"
#: Under the devstack's ``required_for: writes`` rule (bench_approval*): reads run read-only.
READ_ONLY_DAG = "bench_approval_overhead"
SQL = "SELECT count(*) FROM pg_class"


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(ordered), "median_ms": statistics.median(ordered), "p95_ms": p95}


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def config_for(info: StackInfo, revoke_at_end: RevokeMode = "background") -> HoopConnectionConfig:
    return HoopConnectionConfig(
        gateway_url=info.gateway_url,
        revoke_at_end=revoke_at_end,
        # No Airflow task here: the trusted-workers login; the issuer's round trip is
        # measured on its own line (issuer_round_trip).
        vault=StepVaultConfig(**info.trusted_workers_vault()),
    )


def governed_step(config: HoopConnectionConfig, i: int, parts: dict[str, list[float]]) -> float:
    t0 = time.perf_counter()  # a task builds its step (clients) on its first statement too
    ref = StepRef(dag_id="bench_overhead", task_id="one", run_id="bench", try_number=i)
    step = GovernedStep(config, ref)
    parts["step setup (Vault and gateway clients)"].append((time.perf_counter() - t0) * 1000)
    assert step.vault is not None
    parts["vault login"].append(timed(step.vault.login))
    parts["identity token"].append(timed(step.vault.identity_token))
    conn = GatewayConnection(step, "warehouse")
    conn.autocommit = True
    parts["gateway exec (1st: creds + connect + ledger)"].append(
        timed(lambda: conn.cursor().execute(SQL).fetchall())
    )
    parts["end step (gateway end ‖ Vault token revoke)"].append(timed(step.end))
    return (time.perf_counter() - t0) * 1000


def users_left(info: StackInfo, timeout: float = 15.0) -> int:
    """Dynamic users of this bench still in the warehouse (0 once every revoke finished)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(info.admin_dsn(info.warehouse_db), autocommit=True) as admin:
        while True:
            row = admin.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'af\\_bench-overhead%' "
                "OR rolname LIKE 'af\\_bench-approval-overhead%'"
            ).fetchone()
            left = int(row[0]) if row else 0
            if left == 0 or time.monotonic() > deadline:
                return left
            time.sleep(0.2)


def direct_step(dsn: str) -> float:
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SQL).fetchall()
    return (time.perf_counter() - t0) * 1000


def further_statements(
    config: HoopConnectionConfig, dsn: str, count: int
) -> dict[str, list[float]]:
    """Further statements in two open steps, interleaved with the same statement sent directly.

    One step runs as a plain governed step (``bench_overhead``), the other under the
    ``required_for: writes`` rule (``READ_ONLY_DAG``: its unapproved reads run as the READ user
    in the gateway's read-only transaction). Each round sends the statement once through each
    step and once directly, so the three are measured under the same conditions (a VM's speed
    drifts by tens of percent over minutes: two separate loops would compare two machines).
    """
    steps = {
        kind: GovernedStep(config, StepRef(dag_id=dag_id, task_id="many", run_id="bench"))
        for kind, dag_id in (("plain", "bench_overhead"), ("read-only", READ_ONLY_DAG))
    }
    conns = {kind: GatewayConnection(step, "warehouse") for kind, step in steps.items()}
    for conn in conns.values():
        conn.autocommit = True
        conn.cursor().execute(SQL)  # first statement pays for the credential
    samples: dict[str, list[float]] = {"plain": [], "read-only": [], "direct": []}
    with psycopg.connect(dsn, autocommit=True) as pg:
        for _ in range(count):
            for kind, conn in conns.items():
                samples[kind].append(timed(lambda c=conn: c.cursor().execute(SQL).fetchall()))
            samples["direct"].append(timed(lambda: pg.execute(SQL).fetchall()))
    for step in steps.values():
        step.end()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="steps of each kind (default 200)")
    parser.add_argument(
        "--statements", type=int, default=200, help="further statements in one step"
    )
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=100.0,
        help="untimed pause after each governed step (its background revoke finishes)",
    )
    parser.add_argument(
        "--revoke-at-end",
        choices=["background", "wait"],
        default="background",
        help="how the step ends (default background, as GovernedStep does)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()

    with stack.running_stack() as info:
        with psycopg.connect(info.admin_dsn(info.warehouse_db), autocommit=True) as admin:
            admin.execute(f"CREATE ROLE bench_static LOGIN PASSWORD '{STATIC_PASSWORD}'")
        dsn = f"host=127.0.0.1 port={info.pg_port} dbname={info.warehouse_db} user=bench_static password={STATIC_PASSWORD}"
        config = config_for(info, args.revoke_at_end)
        parts: dict[str, list[float]] = defaultdict(list)
        for i in range(args.warmup):
            governed_step(config, 100_000 + i, defaultdict(list))
            direct_step(dsn)
        governed, direct = [], []
        for i in range(args.n):  # interleaved so drift hits both sides alike
            governed.append(governed_step(config, i + 1, parts))
            # Untimed: a background revocation must not overlap (and slow) the direct step.
            time.sleep(args.settle_ms / 1000)
            direct.append(direct_step(dsn))
        users_left(info)  # untimed: the steps' background revokes must not overlap
        further = further_statements(config, dsn, args.statements)
        more_governed, ro_governed = further["plain"], further["read-only"]
        more_direct = further["direct"]
        left = users_left(info)
        issuer = issuer_round_trips(info, args.n)
        print(f"bench users left after the run: {left} (every step's user revoked: {left == 0})")

    results: dict[str, Any] = {
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
        "further read-only statement, governed": stats(ro_governed),
        "added per further read-only statement (median)": statistics.median(ro_governed)
        - statistics.median(more_direct),
        "users left": left,
        "issuer round trip": stats(issuer),
    }
    print(f"machine: {results['machine']}, python {results['python']}")
    print(f"{'what':55} {'n':>5} {'median ms':>10} {'p95 ms':>9}")
    rows = [("governed step", results["governed step"]), ("direct step", results["direct step"])]
    rows += [(f"  {k}", v) for k, v in results["breakdown"].items()]
    rows += [
        ("further statement, governed", results["further statement, governed"]),
        ("further statement, direct", results["further statement, direct"]),
        ("further read-only statement, governed", results["further read-only statement, governed"]),
    ]
    for name, s in rows:
        print(f"{name:55} {s['n']:>5} {s['median_ms']:>10.2f} {s['p95_ms']:>9.2f}")
    print(f"added per step (median): {results['added per step (median)']:.2f} ms (goal <= 60)")
    print(
        f"added per further statement (median): {results['added per further statement (median)']:.2f} ms (goal <= 5)"
    )
    print(
        "added per further read-only statement (median): "
        f"{results['added per further read-only statement (median)']:.2f} ms (goal <= 3.5)"
    )
    trip = results["issuer round trip"]
    print(
        f"issuer round trip (POST /token): median {trip['median_ms']:.2f} ms, "
        f"p95 {trip['p95_ms']:.2f} ms (goal <= 10)"
    )
    if args.json:
        bench_report(results, args.revoke_at_end).write(args.json)


def bench_report(results: dict[str, Any], revoke_at_end: str = "background") -> BenchReport:
    """The results as the BenchReport docs/performance.md is rendered from."""

    def row(what: str, s: dict[str, float], **extra: Any) -> BenchRow:
        return BenchRow(
            what=what, unit="ms", n=int(s["n"]), median=s["median_ms"], p95=s["p95_ms"], **extra
        )

    added = results["added per step (median)"]
    further = results["added per further statement (median)"]
    steps = [row("governed step", results["governed step"])]
    steps += [row("direct step (static user)", results["direct step"])]
    steps += [BenchRow(what="added per step", unit="ms", value=added, **at_most(added, 60, "ms"))]
    steps += [row(f"governed: {k}", v) for k, v in results["breakdown"].items()]
    statements = [
        row("further statement, governed", results["further statement, governed"]),
        row(
            "further statement, direct (both compared with it)",
            results["further statement, direct"],
        ),
        BenchRow(
            what="added per further statement",
            unit="ms",
            value=further,
            **at_most(further, 5, "ms"),
        ),
        row(
            "further read-only statement, governed",
            results["further read-only statement, governed"],
        ),
        BenchRow(
            what="added per further read-only statement",
            unit="ms",
            value=results["added per further read-only statement (median)"],
            **at_most(results["added per further read-only statement (median)"], 3.5, "ms"),
        ),
    ]
    trip = results["issuer round trip"]
    identity = [
        row("issuer round trip (POST /token)", trip, **at_most(trip["median_ms"], 10, "ms"))
    ]
    return BenchReport(
        benchmark="step_overhead",
        issue="#2 [spine]",
        command=command(),
        machine=Machine.here(),
        tables=[
            BenchTable(title="One-statement step, governed vs direct", rows=steps),
            BenchTable(title="Further statements in one open step", rows=statements),
            BenchTable(title="Step identity: the issuer's round trip", rows=identity),
        ],
        notes=[
            f"step end: revoke_at_end={revoke_at_end}"
            + (
                " (answered once the step's connection is closed; the user is revoked and "
                "recorded right after, during an untimed pause (--settle-ms) before the direct step)"
                if revoke_at_end == "background"
                else " (answered once the user is revoked and recorded)"
            ),
            f"statement: {SQL}, autocommit, under the warehouse connection's masking policy",
            f"dynamic users left in the warehouse after the run: {results['users left']} "
            "(0: every step's user was revoked)",
        ],
    )


if __name__ == "__main__":
    main()
