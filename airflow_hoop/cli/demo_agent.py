"""The demo's agent part: ``governed_agent`` answers from the warehouse, its UPDATE waits.

``airflow dags test`` runs ``governed_agent_seed`` (the table), then ``governed_agent``: the
scripted agent's reads run through the gateway as its step, masked and recorded; its UPDATE
makes the gateway hold a review of that exact statement and Airflow park the task for tool
approval. Nobody approves in the demo (``make ui`` is where a person does), so once the
review is open the demo stops that ``dags test`` process (by its PID) and shows the ledger.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from airflow_hoop.client.http import GatewayClient
from airflow_hoop.devstack import airflow_env
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.wire.reviews import Review

SEED_DAG = "governed_agent_seed"
AGENT_DAG = "governed_agent"
_REVIEW_TIMEOUT_S = 300.0


def _open_review(info: StackInfo) -> Review | None:
    with GatewayClient(info.gateway_url, token=lambda: info.auditor_api_key) as client:
        found = client.send("GET", "/api/reviews", params={"dag_id": AGENT_DAG}).json()
    reviews = [Review.model_validate(r) for r in found]
    return next((r for r in reviews if r.status == "PENDING"), None)


def run_agent_demo(console: Console, env: dict[str, str], info: StackInfo, log: Path) -> bool:
    """True when the agent's reads succeeded and its write waits for an approval."""
    seed = airflow_env.dags_test(env, SEED_DAG, log=log)
    if seed.returncode != 0:
        console.print(f"[red]{SEED_DAG} failed (exit {seed.returncode}); see {log}[/red]")
        return False
    with log.open("a") as out:
        out.write(f"$ airflow dags test {AGENT_DAG}\n")
        out.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "dags", "test", AGENT_DAG],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            review = _wait_review(info, proc)
        finally:
            _stop(proc)
    if review is None or review.airflow_hoop is None:
        console.print(f"[red]{AGENT_DAG} asked for no approval; see {log}[/red]")
        return False
    statement = review.airflow_hoop.statements[0].script
    console.print(
        f"\n{AGENT_DAG}: the agent's reads ran as its step (masked, recorded); its proposed "
        f"fix waits for approval at the gateway (review {review.id}):\n  {statement}\n"
        "  `make ui` shows it in the Approvals tab, where a data owner approves it.",
        markup=False,
        highlight=False,
    )
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the ``dags test`` waiting for a person (``make ui`` is where one approves): SIGTERM,
    then SIGKILL when it has not ended (it keeps waiting for input through a SIGTERM)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def _wait_review(info: StackInfo, proc: subprocess.Popen[bytes]) -> Review | None:
    deadline = time.monotonic() + _REVIEW_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        review = _open_review(info)
        if review is not None:
            return review
        time.sleep(1.0)
    return _open_review(info)
