"""The gateway's metrics: route templates as labels (never raw paths), and docs that name
every metric."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, HTTPException

from airflow_hoop.gateway.observability.metrics import GatewayMetrics, RequestMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _app(metrics: GatewayMetrics) -> FastAPI:
    app = FastAPI()

    @app.get("/api/reviews/{review_id}")
    async def review(review_id: str) -> dict[str, str]:
        if review_id == "missing":
            raise HTTPException(404)
        return {"id": review_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unhandled")

    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


@pytest.mark.anyio
async def test_requests_are_labelled_by_route_template_not_by_path() -> None:
    metrics = GatewayMetrics()
    transport = httpx.ASGITransport(app=_app(metrics), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        for review in ("a1", "b2", "missing"):
            await client.get(f"/api/reviews/{review}")
        for i in range(50):  # a caller inventing paths
            await client.get(f"/secret-{i}")
        assert (await client.get("/boom")).status_code == 500
    text = metrics.render().decode()
    counts = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("hoop_gateway_requests_total{")
    }
    template = "/api/reviews/{review_id}"
    assert (
        counts[f'hoop_gateway_requests_total{{method="GET",route="{template}",status="200"}}'] == 2
    )
    assert (
        counts[f'hoop_gateway_requests_total{{method="GET",route="{template}",status="404"}}'] == 1
    )
    assert counts['hoop_gateway_requests_total{method="GET",route="unmatched",status="404"}'] == 50
    assert counts['hoop_gateway_requests_total{method="GET",route="/boom",status="500"}'] == 1
    assert "secret-" not in text and "a1" not in text


def test_every_metric_is_documented() -> None:
    page = DOCS.read_text()
    names = {m.name for m in GatewayMetrics().registry.collect()}
    assert names, "no metrics registered"
    missing = [n for n in names if f"`{n}" not in page]
    assert missing == [], "name these metrics in docs/operations.md"


def test_every_plugin_setting_is_documented() -> None:
    from airflow_hoop.plugins.settings import PluginSettings

    page = DOCS.read_text()
    missing = [name for name in PluginSettings.model_fields if f"| `{name}` |" not in page]
    assert missing == [], "document these [hoop] settings in docs/operations.md"
