"""The ledger stream to a SIEM (#22): throughput to a file and to an HTTP endpoint, and lag.

On the embedded stack (its gateway serves the ledger; the stream reads it with the auditor
key, exactly as ``airflow-hoop audit stream`` does, in this process):

1. Throughput to a file: the whole ledger (``--records`` appended first through the gateway's
   own append path) streamed from a fresh cursor as OCSF events to a rotating file, fsynced
   per batch; ``--runs`` runs, records/s each. Raw JSONL for context.
2. Throughput to HTTP: the same, POSTed in batches of 1,000 (JSON arrays) to a local receiver
   in a process of its own that reads every body and answers 200.
3. Lag at a steady rate: a writer process appends ``--rate`` records/s for ``--seconds``; the
   stream follows (poll 0.25 s) into a file; lag = delivery time - the record's time.

Goals: at least 20,000 records/s to a file and 5,000/s to a local HTTP endpoint (medians);
lag at most 2 s at a steady 1,000 records/s (median; p95 beside it).

Usage: python bench/stream.py [--records 50000] [--runs 5] [--rate 1000] [--seconds 20]
                              [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from ledger import bodies, certified_store
from results_model import (
    BenchReport,
    BenchRow,
    BenchTable,
    Machine,
    Stats,
    at_least,
    at_most,
    command,
)

from airflow_hoop.client.audit import AuditClient
from airflow_hoop.devstack import stack
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.stream.pump import follow
from airflow_hoop.stream.settings import StreamSettings

STEP = StepRef(dag_id="bench_stream", task_id="writer", run_id="bench")


# -- the ledger's records --------------------------------------------------------------------------
async def _fill(dsn: str, settings_path: str, total: int, writers: int = 32) -> None:
    async with certified_store(dsn, settings_path, min_size=2, max_size=8) as store:
        await _fill_store(store, total, writers)


async def _fill_store(store: GatewayStore, total: int, writers: int) -> None:
    async def one(w: int) -> None:
        for i in range(w, total // 2, writers):
            intent, result = bodies(i, writer="stream")
            await store.append(STEP, STEP.key, intent)
            await store.append(STEP, STEP.key, result)

    await asyncio.gather(*(one(w) for w in range(writers)))


def _paced_writer(
    dsn: str, settings_path: str, rate: int, seconds: float, ready: Any, go: Any
) -> None:
    """Appends ``rate`` records/s (pairs, every 10 ms) for ``seconds``."""

    async def main() -> None:
        async with certified_store(dsn, settings_path, min_size=4, max_size=8) as store:
            await paced(store)

    async def paced(store: GatewayStore) -> None:
        ready.set()
        go.wait()
        loop = asyncio.get_running_loop()
        t0, pairs = loop.time(), 0
        while (elapsed := loop.time() - t0) < seconds:
            due = int(elapsed * rate / 2)

            async def pair(i: int) -> None:
                intent, result = bodies(i, writer="stream")
                await store.append(STEP, STEP.key, intent)
                await store.append(STEP, STEP.key, result)

            await asyncio.gather(*(pair(i) for i in range(pairs, due)))
            pairs = due
            await asyncio.sleep(0.01)

    asyncio.run(main())


# -- a local HTTP receiver, in a process of its own ---------------------------------------------
class _Receive(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        json.loads(body)  # a receiver parses what it takes
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _receiver(port_queue: Any) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receive)
    port_queue.put(server.server_address[1])
    server.serve_forever()


# -- the measurements ---------------------------------------------------------------------------
def _stream_once(info: StackInfo, tmp: Path, fmt: str, sink: dict[str, Any]) -> dict[str, Any]:
    settings = StreamSettings(
        format=fmt,  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        cursor_file=tmp / f"cursor-{uuid.uuid4().hex}.json",
        batch_size=1000,
    )
    pump = settings.pump()
    with AuditClient(info.gateway_url, info.auditor_api_key) as client:
        t0 = time.perf_counter()
        follow(pump, client.stream, batch_size=settings.batch_size, keep_following=False)
        seconds = time.perf_counter() - t0
    pump.close()
    return {"records": pump.delivered, "seconds": seconds, "per_s": pump.delivered / seconds}


def throughput(info: StackInfo, tmp: Path, runs: int, fmt: str, sink: Any) -> list[dict[str, Any]]:
    out = []
    for i in range(runs):
        spec = sink(i)
        out.append(_stream_once(info, tmp, fmt, spec))
        print(
            f"  {fmt} to {spec['kind']}: {out[-1]['per_s']:8.0f} records/s ({out[-1]['records']})"
        )
    return out


def lag(info: StackInfo, dsn: str, tmp: Path, rate: int, seconds: float) -> dict[str, Any]:
    settings = StreamSettings(
        format="ocsf",  # type: ignore[arg-type]
        sink={"kind": "file", "path": str(tmp / "lag.jsonl")},  # type: ignore[arg-type]
        cursor_file=tmp / "lag-cursor.json",
        poll_seconds=0.25,
    )
    samples: list[float] = []
    measuring = threading.Event()

    def delivered(batch: Any) -> None:
        now = time.time()
        if measuring.is_set():
            for raw in batch:
                stamp = json.loads(raw.data)["time"].replace("Z", "+00:00")
                samples.append(now - datetime.fromisoformat(stamp).timestamp())

    pump = settings.pump(delivered)
    stop = threading.Event()
    with AuditClient(info.gateway_url, info.auditor_api_key) as client:
        follow(pump, client.stream, keep_following=False)  # catch up with the backlog first
        ctx = multiprocessing.get_context("spawn")
        ready, go = ctx.Event(), ctx.Event()
        writer = ctx.Process(
            target=_paced_writer, args=(dsn, info.gateway_settings_path, rate, seconds, ready, go)
        )
        writer.start()
        ready.wait(60)
        streamer = threading.Thread(
            target=follow,
            args=(pump, client.stream),
            kwargs={"poll_seconds": settings.poll_seconds, "stop": stop},
        )
        streamer.start()
        go.set()
        time.sleep(1.0)  # warm-up
        measuring.set()
        writer.join()
        time.sleep(2 * settings.poll_seconds + 1)  # the last records arrive
        stop.set()
        streamer.join(30)
    pump.close()
    return {"rate": rate, "seconds": seconds, "lag_s": Stats.of(samples).legacy("s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000, help="records in the ledger")
    parser.add_argument("--runs", type=int, default=5, help="throughput runs per sink")
    parser.add_argument("--rate", type=int, default=1000, help="records/s for the lag")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the lag run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    machine = Machine.here()
    print(f"machine: {machine.describe()}")
    with stack.running_stack() as info, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        dsn = str(yaml.safe_load(Path(info.gateway_settings_path).read_text())["database_dsn"])
        t0 = time.perf_counter()
        asyncio.run(_fill(dsn, info.gateway_settings_path, args.records))
        print(f"{args.records} records appended in {time.perf_counter() - t0:.1f} s")

        def file_sink(i: int) -> dict[str, Any]:
            return {"kind": "file", "path": str(tmp / f"out-{i}.jsonl")}

        results: dict[str, Any] = {
            "file_ocsf": throughput(info, tmp, args.runs, "ocsf", file_sink),
            "file_jsonl": throughput(info, tmp, args.runs, "jsonl", file_sink),
        }
        ctx = multiprocessing.get_context("spawn")
        ports = ctx.Queue()
        receiver = ctx.Process(target=_receiver, args=(ports,), daemon=True)
        receiver.start()
        url = f"http://127.0.0.1:{ports.get(timeout=30)}/ingest"
        try:
            results["http_ocsf"] = throughput(
                info, tmp, args.runs, "ocsf", lambda i: {"kind": "http", "url": url}
            )
        finally:
            receiver.terminate()  # our own child, by its handle
            receiver.join()
        results["lag"] = lag(info, dsn, tmp, args.rate, args.seconds)
        print(f"lag at {args.rate}/s: {results['lag']['lag_s']}")
    report = bench_report(machine, results)
    if args.json:
        report.write(args.json)


def bench_report(machine: Machine, results: dict[str, Any]) -> BenchReport:
    def rate_row(what: str, runs: list[dict[str, Any]], goal: float | None) -> BenchRow:
        stats = Stats.of([r["per_s"] for r in runs])
        extra = at_least(stats.median, goal, "records/s") if goal else {}
        note = f"{runs[0]['records']} records a run; slowest run {stats.min:,.0f}/s"
        return BenchRow.of(what, "records/s", stats, note=note, **extra)

    lag_s = results["lag"]["lag_s"]
    lag_row = BenchRow(
        what=f"lag at a steady {results['lag']['rate']} records/s",
        unit="s",
        median=lag_s["median_s"],
        p95=lag_s["p95_s"],
        n=lag_s["n"],
        **at_most(lag_s["median_s"], 2.0, "s"),
        note=f"{results['lag']['seconds']:g} s of traffic; poll 0.25 s; OCSF to a file",
    )
    return BenchReport(
        benchmark="stream",
        issue="#22 [signals]",
        command=command(),
        machine=machine,
        tables=[
            BenchTable(
                title="Throughput (the whole ledger from a fresh cursor, batches of 1,000)",
                rows=[
                    rate_row(
                        "OCSF to a rotating file (fsync per batch)", results["file_ocsf"], 20_000
                    ),
                    rate_row("raw JSONL to a file", results["file_jsonl"], None),
                    rate_row("OCSF to a local HTTP endpoint", results["http_ocsf"], 5_000),
                ],
            ),
            BenchTable(title="Lag", rows=[lag_row]),
        ],
        notes=[
            "The stream reads the gateway's /ledger/stream with the auditor key, checks every "
            "chain link and saves the cursor (fsync + rename) after each batch, as the CLI does.",
            "The machine is shared (2 cores) with the gateway, PostgreSQL and, for HTTP, the "
            "receiver process: the numbers are lower bounds of a dedicated host.",
        ],
        details=results,
    )


if __name__ == "__main__":
    main()
