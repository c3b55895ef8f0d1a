"""The identity issuer's round trip, timed on its own: ``POST /token`` for a running try.

The stack's standalone issuer reads a metadata database; here it holds Airflow's four tables
as the issuer reads them (same names and columns, created by this module, since no Airflow
runs in the bench) with one running task instance per round. Each round commits to a new
secret (untimed: under a hoop operator the commitment rides on the rendered-fields write
Airflow makes anyway), then times the request: the issuer's checks (task instance, rendered
fields, single-use lookup), its durable record and its Ed25519 signature, over HTTP.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import httpx

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.wire.identity import COMMITMENT_FIELD, commitment, new_step_secret

_SCHEMA = """
CREATE TABLE IF NOT EXISTS task_instance (id CHAR(32) PRIMARY KEY, dag_id TEXT, task_id TEXT,
  run_id TEXT, map_index INTEGER, try_number INTEGER, state TEXT, hostname TEXT,
  dag_version_id CHAR(32));
CREATE TABLE IF NOT EXISTS rendered_task_instance_fields (dag_id TEXT, task_id TEXT,
  run_id TEXT, map_index INTEGER, rendered_fields TEXT,
  PRIMARY KEY (dag_id, task_id, run_id, map_index));
CREATE TABLE IF NOT EXISTS dag_version (id CHAR(32) PRIMARY KEY, bundle_name TEXT,
  bundle_version TEXT);
CREATE TABLE IF NOT EXISTS dag_run (dag_id TEXT, run_id TEXT, triggering_user_name TEXT);
"""


def plant_running_try(
    path: Path, run_id: str, *, state: str = "running", version: str | None = None
) -> tuple[str, str]:
    """One task instance of ``bench_issuer.one`` in ``run_id`` whose rendered fields hold a
    commitment; returns its id and the secret."""
    ti_id, secret = uuid.uuid4(), new_step_secret()
    fields = json.dumps({COMMITMENT_FIELD: commitment(str(ti_id), secret)})
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA)
        db.execute(
            "INSERT INTO task_instance VALUES (?, 'bench_issuer', 'one', ?, -1, 1, ?, 'bench', ?)",
            (ti_id.hex, run_id, state, version),
        )
        db.execute(
            "INSERT INTO rendered_task_instance_fields VALUES ('bench_issuer', 'one', ?, -1, ?)",
            (run_id, fields),
        )
    return str(ti_id), secret


def issuer_round_trips(info: StackInfo, n: int) -> list[float]:
    """``n`` timed token requests (ms), each for a new running try with its own secret."""
    path = Path(info.airflow_metadata_url.removeprefix("sqlite:///"))
    version = uuid.uuid4()
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA)
        db.execute("INSERT INTO dag_version VALUES (?, 'dags-folder', NULL)", (version.hex,))
    samples = []
    with httpx.Client(base_url=info.issuer_url, trust_env=False, timeout=10) as client:
        for i in range(n):
            run_id = f"bench_{i}"
            _, secret = plant_running_try(path, run_id, version=version.hex)
            body = {
                "dag_id": "bench_issuer",
                "task_id": "one",
                "run_id": run_id,
                "map_index": -1,
                "secret": secret,
                "audience": "openbao",
            }
            t0 = time.perf_counter()
            response = client.post("/token", json=body)
            samples.append((time.perf_counter() - t0) * 1000)
            response.raise_for_status()
    return samples
