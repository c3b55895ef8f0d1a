"""``audit export`` and the reviewer's bundle, against real traffic through a real gateway:
reads, an unapproved write, an approved write (request, decision, execution), a policy
refusal; checkpoints signed by Vault's transit key; the bundle verified offline after the
gateway has stopped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg
import pytest
from click.testing import CliRunner, Result
from support.gateway_support import CONNECTION, extra_gateway, new_step, step_client
from support.ledger_db import drop_db, fresh_gateway_db, vault_key_file

from airflow_hoop.cli.audit import audit_export, audit_verify
from airflow_hoop.client.audit import AuditClient
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.commands import command_sha256, statement_sha256

CHECKPOINTS = {"every_records": 6, "interval_seconds": 0.3, "poll_seconds": 0.05}


@dataclass
class Traffic:
    stack: StackInfo
    url: str
    db: str
    key_file: Path
    anchor: Path
    table: str
    approved_step: str
    unapproved_step: str
    middle: datetime  # a time between the first and the second half of the traffic
    end: datetime


def _review(stack: StackInfo, url: str, script: str) -> tuple[str, str]:
    """A sensor step asks for an approval of the load step's write; a person approves it.
    Returns the load step's run id and the review id."""
    run_id = f"manual__{uuid.uuid4().hex[:10]}"
    sensor = new_step(dag_id="test_approval_export", task_id="approve")
    sensor = sensor.model_copy(update={"run_id": run_id, "triggered_by": "alice"})
    digest = command_sha256([statement_sha256(script, None)])
    with step_client(stack, sensor, url) as client:
        body = {
            "connection": CONNECTION,
            "target_task_id": "load",
            "statements": [{"script": script, "parameters": None}],
            "command_sha256": digest,
            "justification": "month-end load",
        }
        created = client.http.post("/api/airflow-hoop/reviews", json=body, headers=client.headers())
        assert created.status_code in (200, 201), created.text
        review_id = created.json()["review"]["id"]
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
        decided = http.put(
            f"/api/reviews/{review_id}",
            json={"status": "APPROVED", "airflow_hoop": {"reason": "totals checked"}},
            headers={"Authorization": f"Bearer {stack.reviewer_api_key}"},
        )
        assert decided.status_code == 200, decided.text
    return run_id, review_id


@pytest.fixture(scope="module")
def traffic(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    db, dsn = fresh_gateway_db(stack, "hoop_export")
    base = tmp_path_factory.mktemp("export")
    anchor = base / "anchor"
    table = f"export_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
        conn.execute(f"ALTER TABLE {table} OWNER TO warehouse_writer")
    try:
        checkpoints = {**CHECKPOINTS, "anchor_dir": str(anchor)}
        with extra_gateway(
            stack, "export-writer", database_dsn=dsn, checkpoints=checkpoints
        ) as url:
            plain = new_step(dag_id="test_export_a", task_id="load")
            with step_client(stack, plain, url) as client:
                for i in range(4):
                    assert client.exec(f"SELECT {i}").status_code == 200
                assert (
                    client.exec(f"INSERT INTO {table} VALUES (1)", autocommit=True).status_code
                    == 200
                )
            time.sleep(0.5)  # a checkpoint between the halves
            middle = datetime.now(timezone.utc)
            time.sleep(0.5)
            with step_client(stack, new_step(dag_id="forbidden_export"), url) as refused:
                assert refused.exec("SELECT 1").status_code == 403
            write = f"INSERT INTO {table} VALUES (2)"
            run_id, _ = _review(stack, url, write)
            load = new_step(dag_id="test_approval_export", task_id="load")
            load = load.model_copy(update={"run_id": run_id, "triggered_by": "alice"})
            with step_client(stack, load, url) as client:
                assert client.exec("SELECT 2").status_code == 200
                response = client.exec(write, autocommit=True)
                assert response.status_code == 200, response.text
        # Before the reader starts: its own key certificate (a record) falls after the window.
        end = datetime.now(timezone.utc) + timedelta(milliseconds=1)
        with extra_gateway(
            stack, "export-reader", database_dsn=dsn, checkpoints={"enabled": False}
        ) as reader:
            key_file = vault_key_file(stack, base / "key.json")
            yield Traffic(
                stack, reader, db, key_file, anchor, table, load.key, plain.key, middle, end
            )
    finally:
        drop_db(stack, db)


def export(t: Traffic, out: Path, since: datetime, *extra: str) -> Result:
    args = ["--gateway", t.url, "--api-key", t.stack.auditor_api_key, "--anchor", str(t.anchor)]
    args += ["--public-key", str(t.key_file), "--out", str(out)]
    args += ["--since", since.isoformat(), "--until", t.end.isoformat(), *extra]
    return CliRunner().invoke(audit_export, args)


def verify_bundle(bundle: Path, *extra: str) -> Result:
    return CliRunner().invoke(audit_verify, ["--bundle", str(bundle), *extra])


def csv_rows(bundle: Path) -> list[dict[str, str]]:
    with open(bundle / "report.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_export_of_the_whole_traffic(traffic: Traffic, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    result = export(traffic, bundle, traffic.end - timedelta(hours=1))
    assert result.exit_code == 0, result.output
    assert "Exporting" in result.output and "records" in result.output  # the progress bar
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["verification"]["ok"] and manifest["verification"]["failure"] is None
    for name, digest in manifest["files"].items():
        data = (bundle / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest["sha256"] and len(data) == digest["bytes"]
    assert manifest["public_key"]["how"].startswith("Vault transit key read")
    lines = (bundle / "records.jsonl").read_bytes().splitlines()
    seqs = [json.loads(line)["seq"] for line in lines]
    assert seqs == list(range(1, len(lines) + 1)) and manifest["range"]["start_checkpoint"] is None
    # The window's last record is under a signature: the bundle ends with the covering
    # checkpoint (and the reader's key certificate, under its batch signature, read with it).
    kinds = [json.loads(line)["body"]["kind"] for line in lines]
    assert kinds[-1] == "checkpoint" or kinds[-2:] == ["checkpoint", "gateway.key"]
    assert (bundle / "manifest.sig").is_file()

    rows = csv_rows(bundle)
    by_identity: dict[str, set[str]] = {}
    for row in rows:
        if row["db_user"]:
            by_identity.setdefault(row["db_user"], set()).add(row["identity"])
    assert by_identity and all(len(steps) == 1 for steps in by_identity.values())
    approved = [r for r in rows if r["identity"] == traffic.approved_step and r["write"] == "yes"]
    assert len(approved) == 1
    assert (
        approved[0]["approval"] == "approved" and approved[0]["approval_reason"] == "totals checked"
    )
    assert "via gateway-api" in approved[0]["approved_by"] and approved[0]["review_id"]
    unapproved = [
        r for r in rows if r["identity"] == traffic.unapproved_step and r["write"] == "yes"
    ]
    assert [r["approval"] for r in unapproved] == ["none recorded"]
    assert any(r["status"] == "refused" and r["dag_id"] == "forbidden_export" for r in rows)
    html = (bundle / "report.html").read_text()
    assert "No database user was shared between steps" in html
    assert "totals checked" in html and "OK: " in html

    assert verify_bundle(bundle, "--public-key", str(traffic.key_file)).exit_code == 0


def test_a_window_starts_at_a_signed_checkpoint(traffic: Traffic, tmp_path: Path) -> None:
    bundle = tmp_path / "middle"
    result = export(traffic, bundle, traffic.middle)
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    span, window = manifest["range"], manifest["window"]
    assert span["start_checkpoint"] is not None and span["first_seq"] > 1
    assert span["first_seq"] <= window["first_seq"]
    first = json.loads((bundle / "checkpoints.jsonl").read_bytes().splitlines()[0])
    assert first["statement"]["number"] == span["start_checkpoint"]
    assert first["statement"]["head_hash"] == span["start_hash"]
    assert first["statement"]["last_seq"] == span["first_seq"] - 1
    record = json.loads((bundle / "records.jsonl").read_bytes().splitlines()[0])
    assert record["prev_hash"] == span["start_hash"]
    # Records before the window are there as context; the report holds only the window.
    assert all(int(r["intent_seq"]) >= window["first_seq"] for r in csv_rows(bundle))
    assert verify_bundle(bundle).exit_code == 0


def test_dag_filter_narrows_the_report_not_the_chain(traffic: Traffic, tmp_path: Path) -> None:
    full, narrow = tmp_path / "full", tmp_path / "narrow"
    since = traffic.end - timedelta(hours=1)
    assert export(traffic, full, since).exit_code == 0
    assert export(traffic, narrow, since, "--dag", "test_export_a").exit_code == 0
    assert (narrow / "records.jsonl").read_bytes() == (full / "records.jsonl").read_bytes()
    rows = csv_rows(narrow)
    assert rows and {r["dag_id"] for r in rows} == {"test_export_a"}
    assert verify_bundle(narrow).exit_code == 0


def test_export_refuses_a_used_directory_and_bad_times(traffic: Traffic, tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    assert export(traffic, tmp_path / "used", traffic.middle).exit_code == 2
    bad = export(traffic, tmp_path / "b", traffic.middle, "--since", "yesterday")
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


def test_ledger_api_filters_and_reads(traffic: Traffic) -> None:
    with AuditClient(traffic.url, traffic.stack.auditor_api_key) as client:
        page = client.ledger_page(dag_id="test_export_a", connection=CONNECTION, limit=3)
        assert len(page.records) == 3 and page.next_after_seq == page.records[-1].seq
        rest = client.ledger_page(
            page.next_after_seq, dag_id="test_export_a", connection=CONNECTION
        )
        records = [json.loads(r.body) for r in page.records + rest.records]
        assert records and all(r["step"]["dag_id"] == "test_export_a" for r in records)
        assert all(r["body"]["connection"] == CONNECTION for r in records)
        later = client.ledger_page(since=traffic.middle, until=traffic.end)
        times = [datetime.fromisoformat(json.loads(r.body)["time"]) for r in later.records]
        assert times and all(traffic.middle <= when < traffic.end for when in times)
        window = client.window(traffic.middle, traffic.end)
        assert window.first_seq == later.records[0].seq and window.records == len(later.records)
        streamed = list(client.stream(window.first_seq - 1, window.first_seq + 1))
        assert [s.seq for s in streamed] == [window.first_seq, window.first_seq + 1]
        assert streamed[0].data.decode() == later.records[0].body
        assert client.public_key().source.how == "read by the gateway from Vault's transit engine"
        checkpoints = client.checkpoints(limit=1000).checkpoints
        assert len(checkpoints) >= 3
    with httpx.Client(base_url=traffic.url, trust_env=False) as http:
        auth = {"Authorization": f"Bearer {traffic.stack.auditor_api_key}"}
        naive_times = {"since": "2026-01-01T00:00", "until": "2026-01-02T00:00"}
        naive = http.get("/api/airflow-hoop/ledger/window", params=naive_times, headers=auth)
        assert naive.status_code == 400 and "time zone" in naive.json()["message"]
        # Read-only: no method changes a record.
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            assert http.request(method, "/api/airflow-hoop/ledger", headers=auth).status_code == 405


def test_an_edited_window_of_a_real_export_fails(traffic: Traffic, tmp_path: Path) -> None:
    """The claimed window is checked against the records' times: moved earlier, it takes in
    the context records the export put before it; moved later, it loses its first record."""
    bundle = tmp_path / "edited"
    assert export(traffic, bundle, traffic.middle).exit_code == 0
    signed_bytes = (bundle / "manifest.json").read_bytes()
    manifest = json.loads(signed_bytes)
    span, window = manifest["range"], manifest["window"]
    assert span["first_seq"] < window["first_seq"], "no context records before the window"
    lines = (bundle / "records.jsonl").read_bytes().splitlines()
    first = json.loads(lines[window["first_seq"] - span["first_seq"]])
    edits = {
        "earlier": ((traffic.middle - timedelta(hours=1)).isoformat(), "which starts at seq"),
        "later": (
            (datetime.fromisoformat(first["time"]) + timedelta(microseconds=1)).isoformat(),
            "does not hold its first record",
        ),
    }
    for since, says in edits.values():
        edited = {**manifest, "window": {**window, "since": since}}
        (bundle / "manifest.json").write_text(json.dumps(edited, indent=2))
        result = verify_bundle(bundle)
        assert result.exit_code == 1, result.output
        assert says in result.output and "window was changed" in result.output, result.output
    (bundle / "manifest.json").write_bytes(signed_bytes)  # the signed manifest, as exported
    assert verify_bundle(bundle).exit_code == 0
