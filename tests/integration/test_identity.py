"""The identity issuer with real Airflow (`airflow dags test`), OpenBao, gateway and Postgres.

The attacker here is any code without the victim's secret: the test process (it reads the
victim's commitment from Airflow's metadata database, as the UI and REST API show it) and a
task of the same run (``replay``). Under ``dags test`` they share the host and user with
Airflow, so this shows the issuer's checks, not isolation (docs/identity.md says what does).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from airflow_hoop.cli.demo import read_ledger
from airflow_hoop.devstack import airflow_env
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.records import LedgerRecord
from airflow_hoop.wire.identity import COMMITMENT_FIELD

pytestmark = pytest.mark.airflow

DAG_ID = "test_identity"
SYNC_ENV = "HOOP_TEST_IDENTITY_SYNC"


def _ask(stack: StackInfo, task_id: str, run_id: str, secret: str) -> httpx.Response:
    body = {
        "dag_id": DAG_ID,
        "task_id": task_id,
        "run_id": run_id,
        "map_index": -1,
        "secret": secret,
        "audience": "openbao",
    }
    return httpx.post(f"{stack.issuer_url}/token", json=body, trust_env=False, timeout=10)


@pytest.fixture(scope="module")
def identity_run(airflow_home, stack, tmp_path_factory):
    """Runs the DAG; attacks ``victim`` while it runs; returns what happened."""
    sync = tmp_path_factory.mktemp("identity-sync")
    env = {**airflow_home.env, SYNC_ENV: str(sync)}
    result: dict[str, object] = {}
    runner = threading.Thread(
        target=lambda: result.setdefault("proc", airflow_env.dags_test(env, DAG_ID))
    )
    runner.start()
    attacks: dict[str, httpx.Response] = {}
    try:
        deadline = time.monotonic() + 480  # a loaded 2-core machine parses slowly
        while not (sync / "victim-running").exists():
            if not runner.is_alive() or time.monotonic() > deadline:
                proc = result.get("proc")
                output = (proc.stdout + proc.stderr)[-4000:] if proc else "(still running)"
                raise AssertionError(f"the victim task never ran: {output}")
            time.sleep(0.2)
        run_id = airflow_home.latest_run(DAG_ID)
        with sqlite3.connect(airflow_home.db_path) as db:
            (fields,) = db.execute(
                "SELECT rendered_fields FROM rendered_task_instance_fields "
                "WHERE dag_id = ? AND run_id = ? AND task_id = 'victim'",
                (DAG_ID, run_id),
            ).fetchone()
        published = json.loads(fields)[COMMITMENT_FIELD]
        attacks["guessed_secret"] = _ask(stack, "victim", run_id, secrets.token_urlsafe(32))
        attacks["commitment_as_secret"] = _ask(stack, "victim", run_id, published)
        attacks["finished_task"] = _ask(stack, "first", run_id, secrets.token_urlsafe(32))
    finally:
        (sync / "attacked").write_text("go")
        runner.join(400)
    return result["proc"], airflow_home.latest_run(DAG_ID), attacks


def _events(airflow_home, run_id: str) -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(airflow_home.db_path) as db:
        return db.execute(
            "SELECT task_id, outcome, reason, ti_id FROM hoop_issuer_events "
            "WHERE dag_id = ? AND run_id = ? ORDER BY id",
            (DAG_ID, run_id),
        ).fetchall()


def test_legitimate_tasks_run_with_issuer_attested_steps(identity_run, airflow_home, stack):
    proc, run_id, _ = identity_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    states = airflow_home.task_states(DAG_ID, run_id)
    assert states == {t: "success" for t in ("first", "victim", "replay", "retried")}, states
    records = [LedgerRecord.model_validate_json(r.body) for r in read_ledger(stack)]
    steps = {
        (r.step.task_id, r.step.try_number): r.step
        for r in records
        if getattr(r, "step", None) is not None
        and r.step.dag_id == DAG_ID
        and r.step.run_id == run_id
    }
    ids = _ti_ids(airflow_home, run_id)
    for task_id in ("first", "victim"):
        step = steps[(task_id, 1)]
        assert step.attested_by == "airflow-issuer"
        assert step.bundle_name == "dags-folder"
        assert step.ti_id and step.ti_id.replace("-", "") == str(ids[task_id]).replace("-", "")
    # A retry is a new task instance try: new id, new try number, both in its claims.
    one, two = steps[("retried", 1)], steps[("retried", 2)]
    assert one.ti_id and two.ti_id and one.ti_id != two.ti_id
    assert two.ti_id.replace("-", "") == str(ids["retried"]).replace("-", "")


def test_attacks_on_a_running_task_are_refused_and_recorded(identity_run, airflow_home):
    _, run_id, attacks = identity_run
    for name in ("guessed_secret", "commitment_as_secret"):
        assert attacks[name].status_code == 403, name
        assert "does not match the commitment" in attacks[name].json()["reason"], name
    assert attacks["finished_task"].status_code == 403
    assert "not running" in attacks["finished_task"].json()["reason"]
    refused = [
        (task, reason)
        for task, outcome, reason, _ in _events(airflow_home, run_id)
        if outcome == "refused"
    ]
    assert sum("does not match" in r for t, r in refused if t == "victim") >= 2
    assert any("not running" in r for t, r in refused if t == "first")


def test_a_task_cannot_replay_its_secret_or_take_a_finished_tasks_token(identity_run, airflow_home):
    _, run_id, _ = identity_run
    results = json.loads(airflow_home.xcoms(DAG_ID, run_id)["replay"])
    own = results["own"]
    assert own["status"] == 200
    claims, ids = own["claims"], _ti_ids(airflow_home, run_id)
    assert claims["exp"] - claims["iat"] <= 300 and claims["aud"] == "openbao"
    assert claims["ti_id"].replace("-", "") == ids["replay"].replace("-", "")
    assert (claims["dag_id"], claims["task_id"], claims["run_id"]) == (DAG_ID, "replay", run_id)
    assert claims["attested_by"] == "airflow-issuer" and claims["bundle_name"] == "dags-folder"
    assert claims["try_number"] == "1" and claims["jti"]
    assert results["own_again"]["status"] == 403
    assert "already presented" in results["own_again"]["reason"]
    assert results["finished_first"]["status"] == 403
    assert "not running" in results["finished_first"]["reason"]
    outcomes = [(t, o) for t, o, _, _ in _events(airflow_home, run_id) if t == "replay"]
    assert outcomes == [("replay", "issued"), ("replay", "refused")]


def _ti_ids(airflow_home, run_id: str) -> dict[str, str]:
    with sqlite3.connect(airflow_home.db_path) as db:
        rows = db.execute(
            "SELECT task_id, id FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, run_id),
        ).fetchall()
    return {task: str(ti_id) for task, ti_id in rows}


def test_the_issuer_publishes_its_public_key_only(stack):
    keys = httpx.get(f"{stack.issuer_url}/.well-known/jwks.json", trust_env=False).json()["keys"]
    assert [k["kty"] for k in keys] == ["OKP"] and "d" not in keys[0]
    discovery = httpx.get(
        f"{stack.issuer_url}/.well-known/openid-configuration", trust_env=False
    ).json()
    assert discovery["issuer"] == stack.issuer_iss
    assert Path(stack.issuer_key_path).stat().st_mode & 0o077 == 0
