"""Server time of the Airflow UI's Audit views ([ui] #6).

1. A fresh embedded stack; a ledger of ``--records`` records (default 1,000,000 over 30 days,
   chained, checkpointed and signed as the gateway does: bench/export_month.py's generator),
   followed by one task with ``--statements`` statements (default 1,000) and the stored
   output of each (sessions rows, 200 characters each).
2. A real Airflow API server with the plugin (the auditor key, the simple auth manager).
3. Timed, ``-n`` requests each, as admin:
   - the task instance's Audit tab with all its statements on one page (``page_size``), and
     with the default page of 200; goal: median <= 300 ms;
   - the Audit page's search with each filter it offers, over the whole ledger; goal: median
     <= 500 ms;
   - the verification badge of that task (informational).
   "Server time" is the plugin's ``Server-Timing: app`` (the route, including its read of
   the gateway and the rendering); the wall time of the whole HTTP request is shown beside it.

Usage: python bench/ui.py [--records 1000000] [--statements 1000] [-n 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import psycopg
from export_month import INTENT, ISSUED, RESULT, REVOKED, Generator, SyncSigner
from results_model import BenchReport, BenchRow, BenchTable, Machine, Stats, at_most, command

from airflow_hoop.devstack import airflow_env, stack
from airflow_hoop.devstack.airflow_services import AirflowServices
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.gateway.db.appender import LEDGER_LOCK_KEY
from airflow_hoop.gateway.ledger_io.checkpoints import CHECKPOINT_LOCK_KEY
from airflow_hoop.ledger.anchor import DirectoryAnchor
from airflow_hoop.ledger.canonical import sha256_hex
from airflow_hoop.ledger.records import StepRef

BIG = StepRef(dag_id="bench_ui", task_id="big_task", run_id="scheduled__bench_ui", try_number=1)
_LEDGER_COLUMNS = (
    "seq, time, kind, dag_id, task_id, run_id, try_number, map_index, connection, session_id, "
    "body, hash"
)
_SESSION_COLUMNS = (
    'id, connection, step_key, dag_id, task_id, run_id, try_number, map_index, "user", status, '
    "exit_code, output_status, output, truncated, script, start_date, end_date"
)


def big_task(gen: Generator, start: datetime, statements: int) -> Iterator[tuple[Any, ...]]:
    """One step with ``statements`` statements, checkpointed by the gateway's rule."""
    user = "af_bench_ui-big_task_0001"
    lease = f"database/creds/warehouse-rw/{uuid.uuid4().hex[:24]}"
    step = BIG.model_dump(mode="json")
    bodies = [dict(ISSUED, lease_id=lease, db_user=user)]
    for n in range(statements):
        script = f"UPDATE accounts SET balance = balance + {n} WHERE id = {n}  -- statement {n}"
        sid = str(uuid.UUID(int=n + 1))
        bodies.append(
            dict(
                INTENT,
                session_id=sid,
                script=script,
                script_sha256=sha256_hex(script),
                db_user=user,
            )
        )
        bodies.append(
            dict(
                RESULT,
                session_id=sid,
                rowcount=1,
                status_message="UPDATE 1",
                output_sha256=sha256_hex(str(n)),
                duration_ms=1.2,
            )
        )
    bodies.append(dict(REVOKED, lease_id=lease, db_user=user))
    t = start
    for body in bodies:
        t += timedelta(milliseconds=3)
        yield gen._row(t, step, BIG.key, body)
        checkpoint = gen._maybe_checkpoint(t)
        if checkpoint is not None:
            yield checkpoint
    gen.last_cp_seq = -(10**9)  # as the generator ends: a checkpoint signs every record
    final = gen._maybe_checkpoint(t + timedelta(seconds=1))
    assert final is not None
    yield final


def generate(info: StackInfo, total: int, statements: int) -> dict[str, Any]:
    signer = SyncSigner(info)
    assert info.anchor_dir
    gen = Generator(signer, DirectoryAnchor(info.anchor_dir), total)
    end = datetime.now(timezone.utc) - timedelta(hours=2)
    started = time.monotonic()
    with psycopg.connect(info.admin_dsn(info.gateway_db)) as conn, conn.transaction():
        # The gateway's own locks: its appends and its signer wait while we write.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LEDGER_LOCK_KEY,))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHECKPOINT_LOCK_KEY,))
        with conn.cursor().copy(f"COPY ledger ({_LEDGER_COLUMNS}) FROM STDIN") as copy:
            for row in gen.rows(end):
                copy.write_row(row)
            for row in big_task(gen, end + timedelta(minutes=30), statements):
                copy.write_row(row)
        with conn.cursor().copy(f"COPY sessions ({_SESSION_COLUMNS}) FROM STDIN") as copy:
            for n in range(statements):
                copy.write_row(
                    (
                        uuid.UUID(int=n + 1),
                        "warehouse",
                        BIG.key,
                        BIG.dag_id,
                        BIG.task_id,
                        BIG.run_id,
                        1,
                        -1,
                        "af_bench_ui-big_task_0001",
                        "done",
                        0,
                        "success",
                        f"UPDATE 1  -- row {n} " + "x" * 180,
                        False,
                        "UPDATE ...",
                        end,
                        end,
                    )
                )
    # A ledger in steady state: autovacuum has set the visibility map (index-only scans).
    with psycopg.connect(info.admin_dsn(info.gateway_db), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE ledger")
        conn.execute("VACUUM ANALYZE sessions")
        big = conn.execute(
            "SELECT min(seq), max(seq) FROM ledger WHERE dag_id = %s", (BIG.dag_id,)
        ).fetchone()
        sample_user = conn.execute(
            "SELECT body::jsonb->'body'->>'db_user' FROM ledger WHERE kind = 'session.intent' "
            "AND dag_id = 'etl_3' ORDER BY seq LIMIT 1 OFFSET 100"
        ).fetchone()
    signer.client.close()
    return {
        "records": gen.seq,
        "checkpoints": gen.checkpoints,
        "seconds": time.monotonic() - started,
        "first": end - timedelta(days=30),
        "sample_user": sample_user[0] if sample_user else "nobody",
        "big_span": (big[0], big[1]),
    }


def start_api_server(home: Path, info: StackInfo) -> AirflowServices:
    """Only the API server (the views need no scheduler): its database, then the process."""
    dags = home / "dags"
    dags.mkdir(parents=True)
    services = AirflowServices(home / "airflow", info, dags)
    with psycopg.connect(info.admin_dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{services.metadata_db}"')
    airflow_env.migrate(services.env, log=services.logs / "migrate.log")
    services.start_component("api-server")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{services.url}/api/v2/monitor/health", timeout=2).status_code == 200:
                return services
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the API server did not start: see {services.logs}/api-server.log")


def timed(client: httpx.Client, path: str, n: int, **params: Any) -> tuple[Stats, Stats, str]:
    """Server time (Server-Timing app) and wall time of ``n`` GETs, after one warm-up."""
    first = client.get(path, params=params)
    first.raise_for_status()
    server, wall = [], []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path, params=params)
        wall.append((time.perf_counter() - started) * 1e3)
        response.raise_for_status()
        timing = response.headers.get("server-timing", "")
        server.append(float(timing.split("dur=")[1]) if "dur=" in timing else wall[-1])
    return Stats.of(server), Stats.of(wall), first.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--statements", type=int, default=1000)
    parser.add_argument("-n", type=int, default=30, help="requests per measured view")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    machine = Machine.here()
    print(f"machine: {machine.describe()}, load {machine.load_average_at_start}")
    work = Path(tempfile.mkdtemp(prefix="hoop-bench-ui-"))
    services = None
    try:
        with stack.running_stack() as info:
            made = generate(info, args.records, args.statements)
            print(
                f"ledger: {made['records']} records, {made['checkpoints']} checkpoints, "
                f"written in {made['seconds']:.0f} s"
            )
            services = start_api_server(work, info)
            rows = measure(services, made, args)
    finally:
        if services is not None:
            services.stop()
        shutil.rmtree(work, ignore_errors=True)
    for row in rows:
        print(
            f"{row.what}: median {row.median:.1f} ms, p95 {row.p95:.1f} ms (n={row.n})"
            + (f"  goal {row.goal}: {'met' if row.met else 'NOT met'}" if row.goal else "")
        )
    if args.json:
        BenchReport(
            benchmark="ui",
            issue="#6 [ui]",
            command=command(),
            machine=machine,
            tables=[
                BenchTable(
                    title="Audit views, server time (Server-Timing) and wall time", rows=rows
                )
            ],
            notes=[
                f"ledger of {made['records']} records ({made['checkpoints']} signed checkpoints); "
                f"the task has {args.statements} statements, each with 200 characters of output",
                "server time: the plugin route in the Airflow API server, including its request "
                "to the gateway and the rendering; wall: the whole HTTP request from the client",
                "one API server worker, the gateway and Postgres on the same machine",
            ],
        ).write(args.json)


def measure(
    services: AirflowServices, made: dict[str, Any], args: argparse.Namespace
) -> list[BenchRow]:
    rows: list[BenchRow] = []
    n = args.n
    with services.client("admin") as client:
        client.timeout = httpx.Timeout(120)
        ti = f"/hoop/audit/ti/{BIG.dag_id}/{BIG.run_id}/{BIG.task_id}"
        server, wall, html = timed(client, ti, n, map_index="-1", page_size=str(args.statements))
        assert html.count('class="command"') == args.statements, "the tab lost statements"
        goal = {**at_most(server.median, 300, "ms")}
        rows.append(
            _row(f"Audit tab, {args.statements} statements on one page (server)", server, goal)
        )
        rows.append(_row(f"Audit tab, {args.statements} statements on one page (wall)", wall))
        server, wall, _ = timed(client, ti, n, map_index="-1")
        rows.append(
            _row(
                "Audit tab, first page of 200 statements (server)",
                server,
                at_most(server.median, 300, "ms"),
            )
        )
        day = (made["first"] + timedelta(days=15)).strftime("%Y-%m-%dT%H:%M:%S")
        next_day = (made["first"] + timedelta(days=16)).strftime("%Y-%m-%dT%H:%M:%S")
        searches: list[tuple[str, dict[str, str]]] = [
            ("no filter (newest 50)", {}),
            ("DAG", {"dag_id": "etl_7"}),
            ("task", {"task_id": "task_5"}),
            ("connection", {"connection": "warehouse"}),
            ("user (database user)", {"user": made["sample_user"]}),
            ("status failed (none in this ledger)", {"status": "failed"}),
            ("time window of one day", {"since": day, "until": next_day, "tz": "0"}),
            (
                "DAG + task + status + one day",
                {
                    "dag_id": "etl_3",
                    "task_id": "task_3",
                    "status": "success",
                    "since": day,
                    "until": next_day,
                    "tz": "0",
                },
            ),
        ]
        for name, params in searches:
            server, wall, _ = timed(client, "/hoop/audit/", n, **params)
            rows.append(
                _row(
                    f"Audit page search over {made['records']:,} records: {name} (server)",
                    server,
                    at_most(server.median, 500, "ms"),
                )
            )
        badge = f"/hoop/audit/badge/{BIG.dag_id}"
        first_seq, last_seq = made["big_span"]
        server, wall, _ = timed(
            client, badge, max(3, n // 5), first_seq=str(first_seq), last_seq=str(last_seq)
        )
        rows.append(_row("verification badge of the task (wall)", wall))
    rows.extend(browser_rows(services, args.statements, max(3, n // 5)))
    return rows


def browser_rows(services: AirflowServices, statements: int, n: int) -> list[BenchRow]:
    """The React tab in Chromium: Airflow's page loaded -> all statements rendered."""
    from playwright.sync_api import sync_playwright

    bundle = Path(__file__).parents[1] / "airflow_hoop" / "plugins" / "static" / "hoop-ui.js"
    size_kb = len(gzip.compress(bundle.read_bytes())) / 1024
    url = (
        f"{services.url}/dags/{BIG.dag_id}/runs/{BIG.run_id}/tasks/{BIG.task_id}"
        "/plugin/hoop-access-audit-ti"
    )
    times: list[float] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"]
        )
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_cookies([{"name": "_token", "value": services.token("admin"), "url": url}])
        page = context.new_page()
        for _ in range(n + 1):  # the first visit warms caches and is not counted
            page.goto(url, wait_until="load")
            loaded = page.evaluate(
                "performance.timing.loadEventStart - performance.timing.navigationStart"
            )
            page.wait_for_function(
                f"document.querySelectorAll('tr.hoop-command').length === {statements}",
                timeout=60_000,
            )
            done = page.evaluate("performance.now()")
            times.append(done - loaded)
        browser.close()
    return [
        _row(
            f"Access audit tab in Chromium, {statements} statements rendered after the page load",
            Stats.of(times[1:]),
            at_most(Stats.of(times[1:]).median, 1000, "ms"),
        ),
        BenchRow(
            what="plugin bundle, gzipped",
            unit="KB",
            median=round(size_kb, 1),
            p95=round(size_kb, 1),
            n=1,
            **at_most(size_kb, 300, "KB"),
        ),
    ]


def _row(what: str, stats: Stats, goal: dict[str, object] | None = None) -> BenchRow:
    return BenchRow(
        what=what,
        unit="ms",
        median=round(stats.median, 1),
        p95=round(stats.p95, 1),
        n=stats.n,
        **(goal or {}),
    )


if __name__ == "__main__":
    main()
