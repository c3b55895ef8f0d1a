"""The identity issuer under attack, from inside real tasks (tests/integration/test_identity.py).

``first`` is a hoop operator (commits through its template field) and finishes; ``victim``
uses the hook in a ``@task`` (commits through the supervisor's rendered-fields message), runs
a statement, then waits until the test has attacked it while it is running; ``replay`` holds
its own secret and presents it twice, and asks for ``first``'s token once ``first`` is done;
``retried`` runs a statement, fails its first try and succeeds on the second.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from airflow.sdk import DAG, get_current_context, task

from airflow_hoop.operators.postgres import HoopPostgresOperator

SYNC_ENV = "HOOP_TEST_IDENTITY_SYNC"


def _ask(dag_id: str, task_id: str, run_id: str, secret: str) -> dict[str, object]:
    """One raw request to the issuer named by the hoop connection (what any task can send)."""
    from airflow_hoop.hooks.hoop import HoopHook

    config = HoopHook().get_config().vault
    assert config is not None and config.issuer_url
    body = {
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "map_index": -1,
        "secret": secret,
        "audience": "openbao",
    }
    response = httpx.post(config.issuer_url + "/token", json=body, trust_env=False)
    answer = response.json()
    if response.status_code != 200:
        return {"status": response.status_code, "reason": answer.get("reason")}
    # The token is a credential: only its header and claims leave the task (for the test).
    import jwt

    token = answer["token"]
    return {
        "status": 200,
        "header": jwt.get_unverified_header(token),
        "claims": jwt.decode(token, options={"verify_signature": False}),
        "signing_input_sha": __import__("hashlib").sha256(token.encode()).hexdigest(),
    }


with DAG(dag_id="test_identity", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    first = HoopPostgresOperator(task_id="first", conn_id="warehouse_via_hoop", sql="SELECT 1")

    @task
    def victim() -> str:
        from airflow_hoop.hooks.postgres import HoopPostgresHook

        HoopPostgresHook("warehouse_via_hoop").get_records("SELECT 1")
        sync = Path(os.environ[SYNC_ENV])
        (sync / "victim-running").write_text(str(get_current_context()["ti"].id))
        deadline = time.monotonic() + 120
        while not (sync / "attacked").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        return "done"

    @task
    def replay() -> str:
        from airflow_hoop.hooks.commit import commit_via_supervisor
        from airflow_hoop.task import attestation

        ctx = get_current_context()
        ti = ctx["ti"]
        commit_via_supervisor(attestation.prepare(str(ti.id)))
        secret = attestation.take_secret(str(ti.id))
        results = {
            "own": _ask(ti.dag_id, ti.task_id, ti.run_id, secret),
            "own_again": _ask(ti.dag_id, ti.task_id, ti.run_id, secret),
            "finished_first": _ask(ti.dag_id, "first", ti.run_id, secret),
        }
        return json.dumps(results)

    @task(retries=1, retry_delay=timedelta(seconds=0))
    def retried() -> str:
        from airflow_hoop.hooks.postgres import HoopPostgresHook

        HoopPostgresHook("warehouse_via_hoop").get_records("SELECT 1")
        if get_current_context()["ti"].try_number == 1:
            raise RuntimeError("first try fails on purpose")
        return "second try"

    first >> victim() >> replay()
    first >> retried()
