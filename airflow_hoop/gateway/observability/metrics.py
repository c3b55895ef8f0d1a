"""Prometheus metrics of one gateway process (prometheus-client).

Requests are counted and timed by an ASGI middleware, labelled by the *route template*
(``/api/connections/{name}/exec``), never by the raw path: a caller choosing paths must not be
able to grow the label set without bound, and a path may carry a connection or review id.
Ledger and review figures come from the database at scrape time (``db/vitals.py``), so every
process reports the same ledger. Each app has its own registry (no global state), which is
what lets several apps live in one test process.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_hoop.gateway.db.vitals import LedgerVitals

#: Content type of Prometheus' text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Statement runs take milliseconds to minutes; the buckets span both (seconds).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class GatewayMetrics:
    """The metrics of one gateway app; ``render`` after ``observe_vitals`` for a scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "hoop_gateway_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hoop_gateway_request_seconds",
            "Time to answer a request, by route template",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.database_up = Gauge(
            "hoop_gateway_database_up",
            "1 when the gateway database answered this scrape's query, else 0",
            registry=self.registry,
        )
        self.ledger_head = Gauge(
            "hoop_ledger_head_seq",
            "Sequence number of the newest ledger record (rate() of it: appends per second)",
            registry=self.registry,
        )
        self.unsigned = Gauge(
            "hoop_ledger_unsigned_records",
            "Records past the newest checkpoint's head",
            registry=self.registry,
        )
        self.unsigned_wait = Gauge(
            "hoop_ledger_unsigned_wait_seconds",
            "Age of the oldest record no checkpoint covers (0: every record is covered)",
            registry=self.registry,
        )
        self.checkpoint_age = Gauge(
            "hoop_checkpoint_age_seconds",
            "Seconds since the newest signed checkpoint (NaN: none yet)",
            registry=self.registry,
        )
        self.pending_reviews = Gauge(
            "hoop_reviews_pending",
            "Approvals waiting for a decision",
            registry=self.registry,
        )

    def observe_vitals(self, vitals: LedgerVitals) -> None:
        self.ledger_head.set(vitals.head_seq)
        self.unsigned.set(vitals.unsigned_records)
        self.unsigned_wait.set(vitals.unsigned_wait_seconds)
        age = vitals.checkpoint_age_seconds
        self.checkpoint_age.set(float("nan") if age is None else age)
        self.pending_reviews.set(vitals.pending_reviews)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request by its matched route template."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler is answered with a 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._observe(scope, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = _route_template(scope)
        method = str(scope.get("method", ""))
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.latency.labels(method, route).observe(seconds)


def _route_template(scope: Scope) -> str:
    # FastAPI's router puts the matched route into the scope; anything unmatched is one label.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
