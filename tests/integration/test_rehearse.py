"""``audit rehearse`` on a real ledger: a gateway process of its own (fresh ledger database,
fast checkpoints, an anchor), real steps through it, then the rehearsal as an operator runs it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from support.gateway_support import gateway_process, new_step, step_client
from support.ledger_db import drop_db, fresh_gateway_db, vault_key_file

from airflow_hoop.cli.main import main
from airflow_hoop.client.audit import EPOCH, FAR_FUTURE, AuditClient
from airflow_hoop.devstack.models import StackInfo

CHECKPOINTS = {"every_records": 5, "interval_seconds": 0.3, "poll_seconds": 0.05}


@dataclass
class Ledger:
    stack: StackInfo
    url: str
    settings: Path
    anchor: Path
    key_file: Path
    since: datetime
    until: datetime


@pytest.fixture(scope="module")
def ledger(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    db, dsn = fresh_gateway_db(stack, "hoop_rehearse")
    base = tmp_path_factory.mktemp("rehearse")
    anchor = base / "anchor"
    table = f"rehearse_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
        conn.execute(f"ALTER TABLE {table} OWNER TO warehouse_writer")
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    try:
        checkpoints = {**CHECKPOINTS, "anchor_dir": str(anchor)}
        with gateway_process(
            stack, "rehearse", database_dsn=dsn, checkpoints=checkpoints
        ) as gateway:
            # A write where no rule covers the DAG, a read, and a read under the devstack's
            # rule (run read-only, no approval needed); and a refusal.
            with step_client(stack, new_step("test_rehearse_load"), gateway.url) as client:
                assert client.exec("SELECT 1").status_code == 200
                insert = client.exec(f"INSERT INTO {table} VALUES (1)", autocommit=True)
                assert insert.status_code == 200, insert.text
            with step_client(stack, new_step("test_approval_rehearse"), gateway.url) as client:
                assert client.exec(f"SELECT count(*) FROM {table}").status_code == 200
            with step_client(stack, new_step("forbidden_rehearse"), gateway.url) as client:
                assert client.exec("SELECT 1").status_code == 403
            _wait_signed(stack, gateway.url)
            yield Ledger(
                stack,
                gateway.url,
                gateway.settings_path,
                anchor,
                vault_key_file(stack, base / "key.json"),
                since,
                datetime.now(timezone.utc) + timedelta(seconds=1),
            )
    finally:
        drop_db(stack, db)
        with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def _wait_signed(stack: StackInfo, url: str) -> None:
    """Until a checkpoint signs the last record (the step ends were recorded too)."""
    deadline = time.monotonic() + 20
    with AuditClient(url, stack.auditor_api_key) as client:
        while time.monotonic() < deadline:
            head = client.window(EPOCH, FAR_FUTURE).head_seq or 0
            # The head is the checkpoint that signs every record before it.
            if head > 1 and client.covering_checkpoint(head - 1) == head:
                return
            time.sleep(0.1)
    raise AssertionError("no checkpoint signed the ledger's head")


def rehearse(t: Ledger, out: Path, *extra: str) -> Result:
    args = ["audit", "rehearse", "--gateway", t.url, "--api-key", t.stack.auditor_api_key]
    args += ["--public-key", str(t.key_file), "--out", str(out)]
    args += ["--since", t.since.isoformat(), "--until", t.until.isoformat(), *extra]
    return CliRunner().invoke(main, args)


def test_a_ready_ledger_with_its_timing_and_scorecard(ledger: Ledger, tmp_path: Path) -> None:
    result = rehearse(
        ledger,
        tmp_path / "bundle",
        "--anchor",
        str(ledger.anchor),
        "--settings",
        str(ledger.settings),
    )
    out = result.output
    assert result.exit_code == 0, out
    assert "READY: no gaps" in out
    assert "Exporting" in out and "verify --bundle" in out and "peak memory" in out
    assert "approval rules: the gateway's settings" in out
    # One write ran where no rule covers its DAG; nothing else is a finding.
    assert "warehouse (1)" in out  # the table's detail cell (its name wraps)
    assert (tmp_path / "bundle" / "records.jsonl").exists()


def test_gaps_are_named_and_fail_the_rehearsal(ledger: Ledger, tmp_path: Path) -> None:
    # No anchor compared: the deleted tail of a ledger could not be detected.
    result = rehearse(ledger, tmp_path / "bundle")
    assert result.exit_code == 1, result.output
    assert "GAPS FOUND" in result.output and "not compared" in result.output
    # Without the settings the rules are inferred from the records, and said to be.
    assert "inferred from the records" in result.output


def test_a_dag_filter_scores_only_that_dag(ledger: Ledger, tmp_path: Path) -> None:
    result = rehearse(
        ledger,
        tmp_path / "bundle",
        "--anchor",
        str(ledger.anchor),
        "--dag",
        "test_approval_rehearse",
    )
    assert result.exit_code == 0, result.output
    assert "DAGs test_approval_rehearse" in result.output
    assert "warehouse (1)" not in result.output  # the other DAG's write is not scored
