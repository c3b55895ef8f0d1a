"""What governing an agent's tool call costs: common-ai's SQLToolset ``query``, governed and direct.

Governed: ``HoopAgentToolset(SQLToolset)`` whose hook is ``HoopPostgresHook`` on an open step
(``bench_agent``: under the devstack's ``required_for: writes`` rule, so the read runs as the
step's READ user in the gateway's read-only transaction, as an agent's reads do): the write
check (PostgreSQL's parser, cached), the agent call's digests, the gateway (identity check,
intent and result records, masking) and the COMMIT that ``DbApiHook.run`` sends after it.
Direct: the same ``SQLToolset`` on a stock ``PostgresHook`` with a static user, which connects
for each call (as ``DbApiHook.run`` does); and, as a floor, the same hook on one kept-open
connection. All in this process, interleaved, against one embedded stack. Goal (#21): at most
+5 ms (median) over the direct PostgresHook call.

Usage: python bench/agent_tool_call.py [-n 300] [--warmup 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import psycopg
from results_model import BenchReport, BenchRow, BenchTable, Machine, Stats, at_most, command
from step_overhead import STATIC_PASSWORD, config_for

from airflow_hoop.devstack import stack
from airflow_hoop.hooks.dbapi import GatewayConnection
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.task.step_session import GovernedStep

SQL = "SELECT count(*) FROM pg_class"
GOAL_MS = 5.0


def _toolsets(step: GovernedStep, direct_uri: str) -> dict[str, Any]:
    """The three toolsets: governed, direct (connect per call), direct on one open connection."""
    from airflow.providers.common.ai.toolsets.sql import SQLToolset
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from airflow_hoop.agents.toolset import HoopAgentToolset
    from airflow_hoop.hooks.postgres import HoopPostgresHook

    os.environ["AIRFLOW_CONN_BENCH_HOOP"] = '{"conn_type": "hoop_postgres", "schema": "warehouse"}'
    os.environ["AIRFLOW_CONN_BENCH_DIRECT"] = direct_uri

    class StepHook(HoopPostgresHook):
        # In a task the hook finds the running step itself (HoopHook.get_step); here: this one.
        def get_conn(self) -> GatewayConnection:
            return GatewayConnection(step, "warehouse")

    kept = PostgresHook(postgres_conn_id="bench_direct").get_conn()
    kept.close = lambda: None  # type: ignore[method-assign]  # DbApiHook.run closes each call

    class KeptHook(PostgresHook):
        def get_conn(self) -> Any:
            return kept

    hooks = {
        "governed": StepHook(hoop_postgres_conn_id="bench_hoop"),
        "direct": PostgresHook(postgres_conn_id="bench_direct"),
        "direct, kept-open connection": KeptHook(postgres_conn_id="bench_direct"),
    }
    out: dict[str, Any] = {}
    for name, hook in hooks.items():
        # The same SQLToolset settings on every side (writes allowed: no sqlglot check on any).
        toolset = SQLToolset(
            "bench_hoop" if name == "governed" else "bench_direct", allow_writes=True
        )
        toolset._hook = hook  # the hook a connection lookup would give, bound as above
        out[name] = (
            HoopAgentToolset(toolset, conn_id="bench_hoop") if name == "governed" else toolset
        )
    return out


def _ctx(i: int) -> Any:
    """A RunContext as pydantic-ai builds it for a tool call of turn 0."""
    from pydantic_ai import RunContext
    from pydantic_ai.messages import ModelResponse, ToolCallPart
    from pydantic_ai.models.test import TestModel
    from pydantic_ai.usage import RunUsage

    call_id = f"call-{i}"
    return RunContext(
        deps=None,
        model=TestModel(),
        usage=RunUsage(),
        prompt="How many relations are there?",
        messages=[ModelResponse(parts=[ToolCallPart("query", {"sql": SQL}, tool_call_id=call_id)])],
        tool_call_id=call_id,
        tool_name="query",
    )


async def _call(toolset: Any, ctx: Any) -> float:
    tools = await toolset.get_tools(ctx)
    t0 = time.perf_counter()
    result = await toolset.call_tool("query", {"sql": SQL}, ctx, tools["query"])
    elapsed = (time.perf_counter() - t0) * 1000
    assert '"rows"' in str(result) or "rows" in str(result), result
    return elapsed


async def measure(toolsets: dict[str, Any], n: int, warmup: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in toolsets}
    for i in range(warmup + n):  # interleaved: drift hits every side alike
        for name, toolset in toolsets.items():
            ms = await _call(toolset, _ctx(i))
            if i >= warmup:
                samples[name].append(ms)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="tool calls of each kind")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()

    with stack.running_stack() as info:
        with psycopg.connect(info.admin_dsn(info.warehouse_db), autocommit=True) as admin:
            admin.execute(f"CREATE ROLE bench_static LOGIN PASSWORD '{STATIC_PASSWORD}'")
        uri = (
            f"postgresql://bench_static:{STATIC_PASSWORD}@127.0.0.1:{info.pg_port}/"
            f"{info.warehouse_db}"
        )
        step = GovernedStep(
            config_for(info), StepRef(dag_id="bench_agent", task_id="ask", run_id="bench")
        )
        try:
            samples = asyncio.run(measure(_toolsets(step, uri), args.n, args.warmup))
        finally:
            step.end()

    stats = {name: Stats.of(s) for name, s in samples.items()}
    added = stats["governed"].median - stats["direct"].median
    floor = stats["governed"].median - stats["direct, kept-open connection"].median
    print(f"{'tool call':40} {'n':>5} {'median ms':>10} {'p95 ms':>9}")
    for name, s in stats.items():
        print(f"{name:40} {s.n:>5} {s.median:>10.2f} {s.p95:>9.2f}")
    print(f"added over the direct PostgresHook (median): {added:.2f} ms (goal <= {GOAL_MS})")
    print(f"added over a kept-open direct connection (median): {floor:.2f} ms")
    if args.json:
        rows = [BenchRow.of(f"query tool call, {name}", "ms", s) for name, s in stats.items()]
        rows.append(
            BenchRow(
                what="added per tool call (vs direct PostgresHook)",
                unit="ms",
                value=added,
                **at_most(added, GOAL_MS, "ms"),
            )
        )
        rows.append(
            BenchRow(
                what="added per tool call (vs a kept-open direct connection)",
                unit="ms",
                value=floor,
                note="not the goal's baseline: a PostgresHook connects on every call",
            )
        )
        BenchReport(
            benchmark="agent_tool_call",
            issue="#21 [agents]",
            command=command(),
            machine=Machine.here(),
            tables=[BenchTable(title="SQLToolset query tool call, one-row SELECT", rows=rows)],
            notes=[
                f"statement: {SQL}; governed: read-only under the bench_agent* writes rule, "
                "then the COMMIT DbApiHook.run sends; attributed to its agent call (digests)",
                "direct: PostgresHook with a static user; DbApiHook.run connects per call",
            ],
            details={name: s for name, s in samples.items()},
        ).write(args.json)


if __name__ == "__main__":
    main()
