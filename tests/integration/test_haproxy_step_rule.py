"""docs/deploy.md's HAProxy rule, run as written: a step's requests reach one replica.

Real haproxy on 127.0.0.1 in front of two gateway processes (same database and Vault). The
configuration is read from the page (the block after ``<!-- haproxy-step-rule -->``), only its
ports changed, so the documentation cannot drift from what is tested. Without the rule
(round-robin), the step's second replica answers 409 and nothing runs twice.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from airflow_hoop.client.http import GatewayClient
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.wire.sessions import ExecRequest
from tests.support.gateway_support import CONNECTION, StepClient, extra_gateway, free_port, new_step

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy is not installed (make system-deps)"
)


def doc_config() -> str:
    """The HAProxy configuration of docs/deploy.md, as written (indentation removed)."""
    text = DOC.read_text()
    found = re.search(r"<!-- haproxy-step-rule -->\s*```\n(.*?)\n\s*```", text, re.S)
    assert found, "docs/deploy.md lost its HAProxy block"
    lines = found.group(1).splitlines()
    indent = min(len(x) - len(x.lstrip()) for x in lines if x.strip())
    return "\n".join(x[indent:] for x in lines) + "\n"


def _ported(config: str, front: int, backends: list[str]) -> str:
    config = re.sub(r"bind 127\.0\.0\.1:\d+", f"bind 127.0.0.1:{front}", config)
    ports = iter(u.rsplit(":", 1)[1] for u in backends)
    config = re.sub(r"(server \S+ 127\.0\.0\.1:)\d+", lambda m: m.group(1) + next(ports), config)
    assert next(ports, None) is None, "the documented backend does not list two servers"
    return config


@contextlib.contextmanager
def haproxy(stack: StackInfo, config: str, name: str) -> Iterator[str]:
    path = Path(stack.run_dir) / f"haproxy-{name}.cfg"
    path.write_text(config)
    check = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    port = int(re.search(r"bind 127\.0\.0\.1:(\d+)", config).group(1))  # type: ignore[union-attr]
    proc = subprocess.Popen(
        ["haproxy", "-db", "-f", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/api/healthz", trust_env=False).is_success:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "haproxy did not start"
            time.sleep(0.05)
        time.sleep(2.5)  # both servers' first health check passed (inter 2s)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()  # our own child, by its Popen handle
        proc.wait(10)


def _instances(stack: StackInfo, run_id: str) -> tuple[set[str], int]:
    """The gateway processes that ran the step's sessions, and its credentials issued."""
    with psycopg.connect(stack.admin_dsn(stack.gateway_db)) as conn:
        rows = conn.execute("SELECT instance_id FROM sessions WHERE run_id = %s", (run_id,))
        owners = {r[0] for r in rows.fetchall()}
    return owners, _count(stack, run_id, "credential.issued")


def _count(stack: StackInfo, run_id: str, kind: str) -> int:
    with psycopg.connect(stack.admin_dsn(stack.gateway_db)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger WHERE kind = %s AND run_id = %s", (kind, run_id)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def gateways(stack: StackInfo) -> Iterator[list[str]]:
    with extra_gateway(stack, "hap1") as one, extra_gateway(stack, "hap2") as two:
        yield [one, two]


def test_the_documented_rule_sends_a_step_to_one_replica(
    stack: StackInfo, gateways: list[str]
) -> None:
    config = _ported(doc_config(), free_port(), gateways)
    assert "balance hdr(X-Hoop-Step)" in config
    with haproxy(stack, config, "rule") as url:
        steps = [StepClient(stack, new_step()) for _ in range(6)]
        try:
            for step in steps:
                # The task's own client: it names the step in X-Hoop-Step on every request.
                for n in range(4):
                    # A client (a connection) per statement: the rule holds, not keep-alive.
                    with GatewayClient(
                        url, step.token, step_key=step.step.key, vault_accessor=step.vault.accessor
                    ) as client:
                        client.exec(ExecRequest(connection=CONNECTION, script=f"SELECT {n}"))
                owners, issued = _instances(stack, step.step.run_id)
                assert len(owners) == 1 and issued == 1, (owners, issued)
                # No request reached the other replica (the client retries a 409: without
                # the rule the step would still run, after refusals recorded here).
                assert _count(stack, step.step.run_id, "policy.refused") == 0
            # Different steps may hash to either replica: the rule spreads the load.
            spread = {next(iter(_instances(stack, s.step.run_id)[0])) for s in steps}
            assert len(spread) == 2, "six steps all hashed to one replica"
        finally:
            for step in steps:
                step.close()


def test_without_the_rule_the_second_replica_answers_409_and_nothing_runs_twice(
    stack: StackInfo, gateways: list[str]
) -> None:
    config = _ported(doc_config(), free_port(), gateways)
    config = config.replace("balance hdr(X-Hoop-Step)", "balance roundrobin")
    with haproxy(stack, config, "roundrobin") as url:
        step = StepClient(stack, new_step())
        try:
            answers = []
            for script in ("CREATE TEMP TABLE rr (n int)", "INSERT INTO rr VALUES (1)"):
                with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
                    answers.append(
                        http.post(
                            "/api/sessions",
                            json={"connection": CONNECTION, "script": script},
                            headers={**step.headers(), "X-Hoop-Step": step.step.key},
                        )
                    )
            assert [a.status_code for a in answers] == [200, 409], [a.text for a in answers]
            assert answers[1].headers["X-Hoop-Step-Owner"] in answers[1].json()["message"]
            owners, issued = _instances(stack, step.step.run_id)
            assert len(owners) == 1 and issued == 1
            assert _count(stack, step.step.run_id, "policy.refused") == 1
        finally:
            step.close()
