"""Operating the gateway (docs/operations.md): liveness, readiness, Prometheus metrics and
JSON logs, on real gateway processes, with real faults (a revoked gateway token)."""

from __future__ import annotations

import json
import math
import re
import uuid
from pathlib import Path

import httpx
import hvac
import psycopg
import yaml
from support.gateway_support import StepClient, extra_gateway, gateway_dsn

from airflow_hoop.devstack import vault_setup
from airflow_hoop.devstack.models import StackInfo


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition text (labels: those it must carry)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        sample = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not sample or sample.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', sample.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(sample.group(3))
    raise AssertionError(f"no sample {name} {labels} in:\n{text[:3000]}")


def test_metrics_count_steps_by_route_and_read_the_ledger(
    stack: StackInfo, step: StepClient
) -> None:
    done = step.exec("SELECT 1", autocommit=True)
    assert done.status_code == 200, done.text
    # A caller choosing paths must not grow the label set, nor see its path echoed.
    probe = f"/api/x-{uuid.uuid4().hex}"
    assert httpx.get(stack.gateway_url + probe, trust_env=False).status_code == 404

    text = httpx.get(f"{stack.gateway_url}/metrics", trust_env=False).text
    assert _metric(text, "hoop_gateway_requests_total", route="/api/sessions", status="200") >= 1
    assert _metric(text, "hoop_gateway_requests_total", route="unmatched", status="404") >= 1
    assert probe not in text
    assert "SELECT 1" not in text and step.step.dag_id not in text

    with psycopg.connect(gateway_dsn(stack)) as conn:
        head, pending, checkpoints = conn.execute(
            "SELECT max(seq), (SELECT count(*) FROM reviews WHERE status = 'PENDING'),"
            " count(*) FILTER (WHERE kind = 'checkpoint') FROM ledger"
        ).fetchone()  # type: ignore[misc]
    # The scrape read the ledger after our statement: at least our head (others may append).
    assert _metric(text, "hoop_ledger_head_seq") >= head
    assert _metric(text, "hoop_reviews_pending") == pending
    assert _metric(text, "hoop_gateway_database_up") == 1
    age = _metric(text, "hoop_checkpoint_age_seconds")
    assert age >= 0 if checkpoints else math.isnan(age), (checkpoints, age)


def test_ready_names_each_dependency(stack: StackInfo) -> None:
    ready = httpx.get(f"{stack.gateway_url}/api/readyz", trust_env=False)
    assert ready.status_code == 200, ready.text
    checks = {c["name"]: c for c in ready.json()["checks"]}
    assert set(checks) == {"database", "vault", "checkpoints"}
    assert all(c["ok"] for c in checks.values()), checks


def test_revoked_gateway_token_makes_it_unready_and_json_logs_say_so(
    stack: StackInfo, bao_root: hvac.Client
) -> None:
    own = bao_root.write_data(
        "auth/token/create-orphan",
        data={"policies": [vault_setup.GATEWAY_POLICY, vault_setup.STEP_CREDS_POLICY]},
    )["auth"]["client_token"]
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    vault = {**settings["vault"], "auth": {"method": "token", "token": own}}
    scrape_token = uuid.uuid4().hex
    observability = {"log_format": "json", "log_level": "INFO", "metrics_token": scrape_token}
    with extra_gateway(stack, "ops", vault=vault, observability=observability) as url:
        assert httpx.get(f"{url}/api/readyz", trust_env=False).status_code == 200
        # The metrics token guards /metrics: nothing without it, a wrong one, or as a query.
        assert httpx.get(f"{url}/metrics", trust_env=False).status_code == 401
        wrong = {"Authorization": "Bearer " + "0" * 32}
        assert httpx.get(f"{url}/metrics", headers=wrong, trust_env=False).status_code == 401
        right = {"Authorization": f"Bearer {scrape_token}"}
        assert httpx.get(f"{url}/metrics", headers=right, trust_env=False).status_code == 200

        bao_root.auth.token.revoke(own)
        unready = httpx.get(f"{url}/api/readyz", trust_env=False)
        assert unready.status_code == 503, unready.text
        vault_check = next(c for c in unready.json()["checks"] if c["name"] == "vault")
        assert not vault_check["ok"] and vault_check["fix"], vault_check
        assert own not in unready.text

    log = (Path(stack.run_dir) / "gateway-ops.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert lines, "the gateway logged nothing at INFO"
    assert all({"time", "level", "logger", "message", "instance"} <= set(x) for x in lines)
    assert any(x["level"] == "WARNING" and "not ready: vault" in x["message"] for x in lines)
    assert own not in log and scrape_token not in log
