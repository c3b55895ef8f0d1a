"""What output masking costs: rows/s of the masking step, the same query masked and unmasked,
and MB/s of shell output.

1. Masking step: a 1,000,000-row, 6-column result (id, email, card_number, name, note, amount)
   through ``ResultMasker.mask_rows`` with two column rules (email: hash, card_number: partial)
   and all 17 detectors on every other column. About 10% of the free-text cells hold one
   sensitive value (e-mail, card, phone, IBAN, JWT, token). Goal: >= 200,000 rows/s.
2. The same query, masked and unmasked: ``SELECT *`` of that table (loaded into the embedded
   stack's Postgres) through the gateway's runner (fetch, masking, psql text output) and the
   typed-row encoding of the response, with and without the policy.
3. Shell output: log-like text (1 line in 20 holds a sensitive value) fed in 64 KiB chunks to
   the shell runner's ``OutputCapture``, with and without the policy's detectors.
   Goal: >= 50 MB/s.

Usage: python bench/masking.py [--rows 1000000] [--runs 5] [--shell-mb 64] [--no-query]
       [--json bench/results/masking.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import platform
import random
import statistics
import string
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from pydantic import SecretStr
from results_model import BenchReport, BenchRow, BenchTable, Machine, at_least, command

from airflow_hoop.devstack import stack
from airflow_hoop.gateway.execution.runners.output import OutputCapture
from airflow_hoop.gateway.execution.runners.postgres import PostgresRunner
from airflow_hoop.gateway.masking.detectors import luhn_ok
from airflow_hoop.gateway.masking.engine import ColumnInfo, MaskingEngine
from airflow_hoop.gateway.masking.methods import Hasher
from airflow_hoop.gateway.masking.rules import MaskingPolicy
from airflow_hoop.gateway.masking.stream import StreamMasker
from airflow_hoop.gateway.settings import PostgresConnection
from airflow_hoop.wire.values import encode_value

POLICY = MaskingPolicy.model_validate(
    {
        "name": "bench",
        "columns": [
            {"name": "emails", "columns": ["email"], "method": "hash"},
            {"name": "cards", "columns": ["card_number"], "method": "partial"},
        ],
        "detectors": ["all"],
    }
)
#: The same with the cheapest method on both columns: what the rules' methods cost.
REDACT_POLICY = POLICY.model_copy(
    update={"columns": [c.model_copy(update={"method": "redact"}) for c in POLICY.columns]}
)
HASHER = Hasher(os.urandom(32), "bench v1")
COLUMNS = ["id", "email", "card_number", "name", "note", "amount"]
WORDS = (  # noqa: SIM905
    "order shipped to warehouse fragile handle with care customer paid invoice late refund "
    "the a of and delivery address changed returned item damaged thanks"
).split()
RNG = random.Random(42)


def _card() -> str:
    body = "4" + "".join(RNG.choice(string.digits) for _ in range(14))
    return next(body + d for d in string.digits if luhn_ok(body + d))


def _sensitive(i: int) -> str:
    kind = i % 6
    if kind == 0:
        return f"reach me at user{i}@example.com"
    if kind == 1:
        return f"card {_card()}"
    if kind == 2:
        return f"phone +1 415 555 {i % 10000:04d}"
    if kind == 3:
        return "iban DE89 3704 0044 0532 0130 00"
    if kind == 4:
        head = base64.urlsafe_b64encode(b'{"alg":"HS256"}').rstrip(b"=").decode()
        return f"token {head}.eyJzdWIiOiJ1c2VyIn0.{RNG.getrandbits(128):x}"
    return f"key ghp_{RNG.getrandbits(200):x}"[:44]


def make_rows(n: int) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(n):
        note = " ".join(RNG.choices(WORDS, k=RNG.randint(5, 10)))
        if RNG.random() < 0.10:
            note = f"{note} {_sensitive(i)}"
        name = f"{RNG.choice(WORDS).title()} {RNG.choice(WORDS).title()}"
        rows.append(
            (i, f"user{i}@example.com", _card(), name, note, Decimal(RNG.randint(100, 99999)) / 100)
        )
    return rows


def stats(samples: list[float]) -> dict[str, Any]:
    """Median, 95th and 5th percentiles (for a rate the slow tail is p05), and the samples."""
    ordered = sorted(samples)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p95": pct(0.95),
        "p05": pct(0.05),
        "samples": samples,
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): the machine may be shared."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


# -- 1. the masking step ----------------------------------------------------------------------
def bench_step(
    rows: list[tuple[Any, ...]], runs: int, policy: MaskingPolicy = POLICY
) -> dict[str, Any]:
    engine = MaskingEngine(policy, HASHER)
    columns = [ColumnInfo(c) for c in COLUMNS]
    # One warm-up run, not counted: RE2 builds its DFA states lazily, and the gateway keeps
    # one engine per policy for its whole life, so commands after the first see it warm.
    engine.start().mask_rows(columns, rows[:100_000])
    wall, cpu, record = [], [], None
    for _ in range(runs):
        masker = engine.start()
        w, c = timed(functools.partial(masker.mask_rows, columns, rows))
        wall.append(w)
        cpu.append(c)
        record = masker.record()
    assert record is not None
    return {
        "rows": len(rows),
        "seconds": stats(wall),
        "rows_per_s": stats([len(rows) / s for s in wall]),
        "rows_per_cpu_s": stats([len(rows) / s for s in cpu]),
        # CPU time per row: comparable between a loaded and a quiet machine, unlike rows/s.
        "cpu_us_per_row": stats([s / len(rows) * 1e6 for s in cpu]),
        "redactions_per_run": record.total_redact_count,
        "info_types": record.info_types,
    }


# -- 2. the same query, masked and unmasked ---------------------------------------------------
async def _query_once(target: PostgresConnection, masked: bool, n: int) -> tuple[float, float]:
    runner = await PostgresRunner.connect(
        target, "bench_masking", SecretStr("bench-masking"), max_rows=n, max_output=16 << 20
    )
    try:
        masker = MaskingEngine(POLICY, HASHER).start() if masked else None
        t0, c0 = time.perf_counter(), time.process_time()
        outcome = await runner.execute("SELECT * FROM bench_masking ORDER BY id", masker=masker)
        _typed = [[encode_value(v) for v in row] for row in outcome.rows]
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        await runner.execute("ROLLBACK")
        assert outcome.status == "success" and len(_typed) == n, outcome.error
        return elapsed, cpu
    finally:
        await runner.close()


def bench_query(rows: list[tuple[Any, ...]], runs: int) -> dict[str, Any]:
    info = stack.up(gateway=False)
    try:
        with psycopg.connect(info.admin_dsn(info.warehouse_db), autocommit=True) as conn:
            conn.execute("CREATE ROLE bench_masking LOGIN PASSWORD 'bench-masking'")
            conn.execute(
                "CREATE TABLE bench_masking (id int PRIMARY KEY, email text, card_number text, "
                "name text, note text, amount numeric)"
            )
            conn.execute("GRANT SELECT ON bench_masking TO bench_masking")
            with conn.cursor().copy("COPY bench_masking FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.execute("VACUUM ANALYZE bench_masking")
        target = PostgresConnection(
            name="bench",
            host="127.0.0.1",
            port=info.pg_port,
            database=info.warehouse_db,
            sslmode="disable",
            vault_role="unused",
        )
        plain, masked = [], []
        for _ in range(runs):  # interleaved, so drift hits both alike
            plain.append(asyncio.run(_query_once(target, False, len(rows))))
            masked.append(asyncio.run(_query_once(target, True, len(rows))))
    finally:
        stack.down(info)
    p, m = statistics.median(w for w, _ in plain), statistics.median(w for w, _ in masked)
    pc, mc = statistics.median(c for _, c in plain), statistics.median(c for _, c in masked)
    return {
        "rows": len(rows),
        "unmasked_s": stats([w for w, _ in plain]),
        "masked_s": stats([w for w, _ in masked]),
        "unmasked_cpu_s": stats([c for _, c in plain]),
        "masked_cpu_s": stats([c for _, c in masked]),
        "masked_rows_per_s": stats([len(rows) / w for w, _ in masked]),
        "cost_ratio_median": m / p,
        "cpu_cost_ratio_median": mc / pc,
        "added_s_median": m - p,
    }


# -- 3. shell output --------------------------------------------------------------------------
def make_log(megabytes: int) -> bytes:
    lines, size, i = [], 0, 0
    while size < megabytes * 1_000_000:
        line = f"2026-11-23T20:{i % 60:02d}:{i % 57:02d}Z INFO worker-{i % 8} " + " ".join(
            RNG.choices(WORDS, k=RNG.randint(6, 14))
        )
        if i % 20 == 0:
            line += " " + _sensitive(i)
        lines.append(line)
        size += len(line) + 1
        i += 1
    return ("\n".join(lines) + "\n").encode()


def _capture_rate(data: bytes, masked: bool, chunk: int = 65536) -> tuple[float, float]:
    """(MB per wall second, MB per CPU second of this process)."""
    capture = OutputCapture(encoding="utf-8", max_bytes=len(data) * 2)
    if masked:
        capture.add_masker(StreamMasker(SHELL_ENGINE.start()))
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(data), chunk):
        capture.feed(data[i : i + chunk])
    capture.finish()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return len(data) / 1e6 / elapsed, len(data) / 1e6 / cpu


SHELL_ENGINE = MaskingEngine(POLICY, HASHER)  # one per policy, as in the gateway


def bench_shell(megabytes: int, runs: int) -> dict[str, Any]:
    data = make_log(megabytes)
    _capture_rate(data[:2_000_000], True)  # warm-up (see bench_step)
    plain, masked = [], []
    for _ in range(runs):
        plain.append(_capture_rate(data, False))
        masked.append(_capture_rate(data, True))
    return {
        "megabytes": len(data) / 1e6,
        "unmasked_mb_per_s": stats([w for w, _ in plain]),
        "masked_mb_per_s": stats([w for w, _ in masked]),
        "unmasked_mb_per_cpu_s": stats([c for _, c in plain]),
        "masked_mb_per_cpu_s": stats([c for _, c in masked]),
        "cost_ratio_median": statistics.median(w for w, _ in plain)
        / statistics.median(w for w, _ in masked),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shell-mb", type=int, default=64)
    parser.add_argument("--no-query", action="store_true", help="skip part 2 (needs the stack)")
    parser.add_argument("--query-rows", type=int, help="rows of part 2 (default: --rows)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    report: dict[str, Any] = {"machine": machine(), "runs": args.runs}
    report["machine"]["load_average_at_start"] = os.getloadavg()
    print(f"machine: {report['machine']}")
    rows = make_rows(args.rows)
    step = report["masking_step"] = bench_step(rows, args.runs)
    r = step["rows_per_s"]
    print(
        f"masking step, {args.rows} rows x 6 columns, N={args.runs}: median {r['median']:,.0f} "
        f"rows/s wall, {step['rows_per_cpu_s']['median']:,.0f} rows/s per CPU second, "
        f"{step['cpu_us_per_row']['median']:.2f} µs CPU per row (run "
        f"time median {step['seconds']['median']:.2f} s, p95 {step['seconds']['p95']:.2f} s; "
        f"goal >= 200,000 rows/s); {step['redactions_per_run']:,} redactions per run"
    )
    redact = report["masking_step_redact"] = bench_step(rows, args.runs, REDACT_POLICY)
    print(
        f"  the same with 'redact' on both columns: median "
        f"{redact['rows_per_s']['median']:,.0f} rows/s wall, "
        f"{redact['rows_per_cpu_s']['median']:,.0f} rows/s per CPU second"
    )
    if not args.no_query:
        q = report["query"] = bench_query(rows[: args.query_rows or len(rows)], args.runs)
        print(
            f"same query ({q['rows']:,} rows) through the runner, N={args.runs}: unmasked median "
            f"{q['unmasked_s']['median']:.2f} s (p95 {q['unmasked_s']['p95']:.2f}), masked "
            f"{q['masked_s']['median']:.2f} s (p95 {q['masked_s']['p95']:.2f}): "
            f"x{q['cost_ratio_median']:.2f}, +{q['added_s_median']:.2f} s; gateway CPU "
            f"{q['unmasked_cpu_s']['median']:.2f} s vs {q['masked_cpu_s']['median']:.2f} s "
            f"(x{q['cpu_cost_ratio_median']:.2f})"
        )
    s = report["shell"] = bench_shell(args.shell_mb, args.runs)
    print(
        f"shell output, {s['megabytes']:.0f} MB in 64 KiB chunks, N={args.runs}: masked median "
        f"{s['masked_mb_per_s']['median']:.1f} MB/s (slowest 5% {s['masked_mb_per_s']['p05']:.1f}; goal "
        f">= 50), {s['masked_mb_per_cpu_s']['median']:.1f} MB per CPU second; unmasked "
        f"{s['unmasked_mb_per_s']['median']:.1f} MB/s (x{s['cost_ratio_median']:.2f})"
    )
    if args.json:
        bench_report(report).write(args.json)


def bench_report(report: dict[str, Any]) -> BenchReport:
    """The results as the BenchReport docs/performance.md is rendered from (the full dict is
    kept in ``details``)."""

    def row(what: str, unit: str, s: dict[str, Any], **extra: Any) -> BenchRow:
        return BenchRow(what=what, unit=unit, n=s["n"], median=s["median"], p95=s["p95"], **extra)

    step = report["masking_step"]
    rate = step["rows_per_s"]["median"]
    rows = [
        row(
            f"masking step, {step['rows']:,} rows x 6 columns",
            "rows/s",
            step["rows_per_s"],
            note=f"slowest 5%: {step['rows_per_s']['p05']:,.0f} rows/s; p95 is the fast end",
            **at_least(rate, 200_000, "rows/s"),
        ),
        row("masking step, run time", "s", step["seconds"]),
        row(
            "masking step, CPU time per row",
            "µs",
            step["cpu_us_per_row"],
            note=f"{step['rows_per_cpu_s']['median']:,.0f} rows per CPU second",
        ),
    ]
    if "masking_step_redact" in report:
        redact = report["masking_step_redact"]
        rows.append(row("the same, 'redact' on both columns", "rows/s", redact["rows_per_s"]))
        rows.append(row("the same, 'redact', CPU time per row", "µs", redact["cpu_us_per_row"]))
    if "query" in report:
        q = report["query"]
        rows += [
            row(f"same query ({q['rows']:,} rows), unmasked", "s", q["unmasked_s"]),
            row(f"same query ({q['rows']:,} rows), masked", "s", q["masked_s"]),
            BenchRow(what="masked / unmasked (medians)", unit="x", value=q["cost_ratio_median"]),
            BenchRow(
                what="masked / unmasked, gateway CPU time (medians)",
                unit="x",
                value=q["cpu_cost_ratio_median"],
            ),
        ]
    sh = report["shell"]
    mbs = sh["masked_mb_per_s"]["median"]
    rows += [
        row(
            f"shell output, {sh['megabytes']:.0f} MB, masked",
            "MB/s",
            sh["masked_mb_per_s"],
            note=f"slowest 5%: {sh['masked_mb_per_s']['p05']:.1f} MB/s",
            **at_least(mbs, 50, "MB/s"),
        ),
        row("shell output, unmasked", "MB/s", sh["unmasked_mb_per_s"]),
        row("shell output, masked, per CPU second", "MB/s", sh["masked_mb_per_cpu_s"]),
    ]
    load = report["machine"]["load_average_at_start"][0]
    notes = [f"load average at start: {load:.2f} on {report['machine']['cores']} cores"]
    if load > 1.0:
        notes.append(
            "the machine was shared while this ran: wall-clock rates are low; CPU time per row "
            "(and MB per CPU second) move less, but move too: compare runs taken together"
        )
    return BenchReport(
        benchmark="masking",
        issue="#7 [masking]",
        command=command(),
        machine=Machine.here(),
        tables=[BenchTable(title="Output masking", rows=rows)],
        notes=notes,
        details=json.loads(json.dumps(report, default=str)),
    )


if __name__ == "__main__":
    main()
