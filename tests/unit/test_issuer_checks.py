"""The issuer's checks, in order, against a SQLite database shaped like Airflow's tables.

No Airflow runs here (tests/integration/test_identity.py does that): the rows are planted, as
a database administrator could; each refusal names its reason and is recorded.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from airflow_hoop.plugins.issuer.app import Refused, StepIssuer
from airflow_hoop.plugins.issuer.keys import load_key, write_key
from airflow_hoop.plugins.issuer.settings import IssuerSettings
from airflow_hoop.plugins.issuer.store import IssuerStore
from airflow_hoop.wire.identity import StepTokenRequest, new_step_secret

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from issuer_round_trip import plant_running_try


@pytest.fixture
def issuer(tmp_path: Path) -> tuple[StepIssuer, Path]:
    write_key(tmp_path / "k.pem")
    settings = IssuerSettings(key_path=str(tmp_path / "k.pem"), issuer="https://af/hoop/issuer")
    db = tmp_path / "airflow.db"
    store = IssuerStore(f"sqlite:///{db}")
    return StepIssuer(settings, load_key(settings.key_path), store), db


def _ask(run_id: str, secret: str, audience: str = "openbao") -> StepTokenRequest:
    return StepTokenRequest(
        dag_id="bench_issuer", task_id="one", run_id=run_id, secret=secret, audience=audience
    )


def _refusal(issuer: StepIssuer, request: StepTokenRequest) -> str:
    with pytest.raises(Refused) as caught:
        issuer.mint(request)
    return caught.value.reason


def test_each_check_refuses_with_its_reason_and_is_recorded(issuer) -> None:
    issuer, db = issuer
    _, secret = plant_running_try(db, "r1")
    assert "audience" in _refusal(issuer, _ask("r1", secret, audience="gateway"))
    assert "no such task instance" in _refusal(issuer, _ask("other", secret))
    assert "does not match" in _refusal(issuer, _ask("r1", new_step_secret()))
    _, done = plant_running_try(db, "r2", state="success")
    assert "not running" in _refusal(issuer, _ask("r2", done))
    assert issuer.mint(_ask("r1", secret)).token
    assert "already presented" in _refusal(issuer, _ask("r1", secret))
    with sqlite3.connect(db) as conn:
        outcomes = [o for (o,) in conn.execute("SELECT outcome FROM hoop_issuer_events")]
    assert outcomes == ["refused"] * 4 + ["issued", "refused"]


def test_rendered_fields_without_a_commitment_are_refused(issuer) -> None:
    issuer, db = issuer
    _, secret = plant_running_try(db, "r1")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE rendered_task_instance_fields SET rendered_fields = '{}'")
    assert "hold no step commitment" in _refusal(issuer, _ask("r1", secret))
