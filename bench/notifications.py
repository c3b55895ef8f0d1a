"""What approval notifications cost a review request, and how soon the webhook delivers.

1. Request latency: ``POST /api/airflow-hoop/reviews`` by a real step (its own Vault identity),
   each a new review, against (a) the stack's gateway without a webhook and (b) a gateway
   process whose webhook receiver holds every delivery for 5 s (a slow receiver). The goal is
   that a webhook adds no wait: (b)'s median at most 5 ms above (a)'s.
2. Delivery latency: with a receiver that answers at once, from the moment the request's answer
   arrives to the moment the receiver has the signed notification. Goal: 100 ms (median).

Everything real: the embedded stack (PostgreSQL, OpenBao, gateway processes) and a local HTTP
receiver; the machine may be shared (the load average is recorded).

Usage: python bench/notifications.py [-n 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from results_model import BenchReport, BenchRow, BenchTable, Machine, Stats, at_most, command

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.gateway_support import CONNECTION, extra_gateway, step_client
from support.notification_support import webhook_receiver

from airflow_hoop.devstack import stack
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.commands import (
    command_sha256,
    parameters_sha256,
    statement_sha256,
)
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.wire.notifications import ApprovalNotification

DAG = "bench_approval_notify"
SCRIPT = "INSERT INTO payroll (id, note) VALUES (1, 'bench')"


def _body() -> dict[str, Any]:
    digest = statement_sha256(SCRIPT, parameters_sha256(None))
    deadline = datetime.now(timezone.utc) + timedelta(hours=1)
    return {
        "connection": CONNECTION,
        "target_task_id": "load",
        "statements": [{"script": SCRIPT}],
        "command_sha256": command_sha256([digest]),
        "justification": "bench",
        "wait_deadline": deadline.isoformat(),
    }


def requests(info: StackInfo, url: str, n: int, arrivals: Any = None) -> dict[str, list[float]]:
    """N review requests, each a new run; request times and (with ``arrivals``) delivery lags."""
    took, lag = [], []
    with step_client(info, StepRef(dag_id=DAG, task_id="approve", run_id="warm"), url=url) as s:
        s.http.post("/api/airflow-hoop/reviews", json=_body(), headers=s.headers())  # warm-up
    for _ in range(n):
        run = f"manual__{uuid.uuid4().hex[:10]}"
        with step_client(info, StepRef(dag_id=DAG, task_id="approve", run_id=run), url=url) as s:
            headers = s.headers()
            start = time.perf_counter()
            response = s.http.post("/api/airflow-hoop/reviews", json=_body(), headers=headers)
            answered = time.perf_counter()
            assert response.status_code == 201, response.text
            took.append((answered - start) * 1000)
            review_id = response.json()["review"]["id"]
        if arrivals is not None:
            deadline = time.monotonic() + 10
            while review_id not in arrivals and time.monotonic() < deadline:
                time.sleep(0.001)
            lag.append((arrivals[review_id] - answered) * 1000)
    return {"request_ms": took, "delivery_ms": lag}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    machine = Machine.here()
    info = stack.up(gateway=True)
    key_path = Path(info.run_dir) / "bench-webhook.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(24).hex().encode())
    try:
        plain = requests(info, info.gateway_url, args.n)
        with webhook_receiver() as receiver:
            settings = {
                "webhook": {
                    "url": receiver.url,
                    "secret_file": str(key_path),
                    "timeout": 5,
                    "attempts": 1,
                },
                "airflow_base_url": "https://airflow.example.test",
            }
            with extra_gateway(info, "bench-notify", notifications=settings) as url:
                receiver.mode = "hold"  # every delivery waits 5 s (released below)
                held = requests(info, url, args.n)
                receiver.release.set()
                receiver.mode = "ok"
                arrivals = _Arrivals(receiver)
                delivered = requests(info, url, args.n, arrivals)
    finally:
        stack.down(info)
    report = bench_report(machine, plain, held, delivered)
    for table in report.tables:
        for row in table.rows:
            print(f"{row.what}: median {row.median:.1f} {row.unit}, p95 {row.p95:.1f} ({row.goal})")
    if args.json:
        report.write(args.json)


class _Arrivals:
    """review id -> when the receiver had it (perf_counter), read from the receiver's posts."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        self.seen: dict[str, float] = {}
        self.count = 0

    def _scan(self) -> None:
        posted = self.receiver.posted
        while self.count < len(posted):
            p = posted[self.count]
            self.count += 1
            n = ApprovalNotification.model_validate_json(p.body)
            if n.kind == "review.requested":
                self.seen[n.review_id] = p.at
        return None

    def __contains__(self, review_id: object) -> bool:
        self._scan()
        return review_id in self.seen

    def __getitem__(self, review_id: str) -> float:
        self._scan()
        return self.seen[review_id]


def bench_report(
    machine: Machine,
    plain: dict[str, list[float]],
    held: dict[str, list[float]],
    delivered: dict[str, list[float]],
) -> BenchReport:
    a, b = Stats.of(plain["request_ms"]), Stats.of(held["request_ms"])
    c, d = Stats.of(delivered["request_ms"]), Stats.of(delivered["delivery_ms"])
    rows = [
        BenchRow.of("review request, no webhook", "ms", a),
        BenchRow.of(
            "review request, webhook receiver holding each delivery 5 s",
            "ms",
            b,
            note=f"median {b.median - a.median:+.1f} ms against no webhook",
            **at_most(b.median - a.median, 5, "ms added"),
        ),
        BenchRow.of("review request, webhook receiver answering at once", "ms", c),
        BenchRow.of(
            "request answered -> signed notification at the receiver",
            "ms",
            d,
            **at_most(d.median, 100, "ms"),
        ),
    ]
    return BenchReport(
        benchmark="notifications",
        issue="#22 [signals]",
        command=command(),
        machine=machine,
        tables=[BenchTable(title="Approval notifications (gateway webhook)", rows=rows)],
        notes=[
            "each request is a new review by a new step (Vault login outside the timed call); "
            "the goals are this project's (the issue sets none for notifications)"
        ],
        details={"plain": plain, "held": held, "delivered": delivered},
    )


if __name__ == "__main__":
    main()
