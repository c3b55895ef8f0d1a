"""`airflow-hoop audit stream` and the gateway-side stream against the real stack
(docs/signals.md): every record of a run delivered once and in order as OCSF events; a stream
killed with SIGKILL mid-way and restarted loses nothing and repeats at most the batch in
flight; a forged record stops the stream naming its seq; masked values stay masked.

The ledger lives in a gateway database of its own (same PostgreSQL, same Vault; as in
test_tamper.py) so that the counts are exact and the forgery cannot disturb other tests: a
writer gateway makes the traffic and its checkpoints, a reader gateway serves the ledger.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.gateway_support import extra_gateway, new_step, step_client
from support.ledger_db import drop_db, fresh_gateway_db, unlocked

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.stream.ocsf import EVENT

SECRET_EMAIL = "alice.streamed@example.com"
#: Built by the statement at run time: the script never holds the whole address.
MASKED_SQL = "SELECT 'alice.streamed' || '@' || 'example.com' AS email"
CHECKPOINTS = {"every_records": 10, "interval_seconds": 0.5, "poll_seconds": 0.05}


@dataclass
class Ledger:
    stack: StackInfo
    db: str
    dsn: str
    url: str

    def rows(self) -> list[tuple[int, str, str]]:
        with psycopg.connect(self.stack.admin_dsn(self.db), autocommit=True) as conn:
            return conn.execute("SELECT seq, hash, body FROM ledger ORDER BY seq").fetchall()

    def stream(self, tmp: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.command(tmp), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def command(self, tmp: Path) -> list[str]:
        return [
            sys.executable, "-m", "airflow_hoop.cli.main", "audit", "stream",
            "--gateway", self.url, "--api-key", self.stack.auditor_api_key,
            "--cursor", str(tmp / "cursor.json"),
        ]  # fmt: skip


def _traffic(stack: StackInfo, url: str) -> None:
    for index in range(3):
        with step_client(stack, new_step(dag_id="test_siem", task_id=f"t{index}"), url) as c:
            for i in range(8):
                assert c.exec(f"SELECT {index * 100 + i}").status_code == 200
            if index == 0:
                response = c.exec(MASKED_SQL)
                assert response.status_code == 200, response.text
                assert SECRET_EMAIL not in response.text  # masked by the warehouse policy
        time.sleep(CHECKPOINTS["interval_seconds"] + 0.2)
    with step_client(stack, new_step(dag_id="forbidden_siem"), url) as c:
        assert c.exec("SELECT 1").status_code == 403  # a refusal, recorded


@pytest.fixture(scope="module")
def ledger(stack: StackInfo) -> Iterator[Ledger]:
    db, dsn = fresh_gateway_db(stack, "hoop_siem")
    try:
        with extra_gateway(stack, "siem-writer", database_dsn=dsn, checkpoints=CHECKPOINTS) as url:
            _traffic(stack, url)
        with psycopg.connect(stack.admin_dsn(db), autocommit=True) as conn:
            conn.execute("CREATE TABLE ledger_pristine AS SELECT * FROM ledger")
        reader = {"checkpoints": {"enabled": False}}
        with extra_gateway(stack, "siem-reader", database_dsn=dsn, **reader) as url:
            yield Ledger(stack, db, dsn, url)
    finally:
        drop_db(stack, db)


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_record_once_in_order_as_valid_ocsf(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    proc = ledger.stream(tmp_path, "--to", "file", "--file", str(out), "--once")
    assert proc.returncode == 0, proc.stderr
    rows = ledger.rows()
    events = _events(out)
    assert [e["unmapped"]["airflow_hoop"]["seq"] for e in events] == [r[0] for r in rows]
    kinds = set()
    for event, (_seq, digest, body) in zip(events, rows, strict=True):
        EVENT.validate_python(event)
        record = json.loads(body)
        ext = event["unmapped"]["airflow_hoop"]
        assert (ext["hash"], ext["prev_hash"], ext["body"]) == (
            digest,
            record["prev_hash"],
            record["body"],
        )
        assert event["type_uid"] == event["class_uid"] * 100 + event["activity_id"]
        assert event["metadata"]["product"]["name"] == "airflow-hoop"
        kinds.add((record["body"]["kind"], event["class_uid"]))
    assert {
        ("session.intent", 6003),
        ("session.result", 6003),
        ("policy.refused", 3003),
        ("credential.issued", 3001),
        ("credential.revoked", 3001),
        ("checkpoint", 0),
    } <= kinds
    # The writer signed a last checkpoint when it stopped: every record is covered (but the
    # reader's key certificate, written as it started: the reader signs no checkpoint).
    assert all(
        e["unmapped"]["airflow_hoop"].get("covering_checkpoint")
        for e in events
        if e["metadata"]["event_code"] not in ("checkpoint", "gateway.key")
    )
    cursor = json.loads((tmp_path / "cursor.json").read_text())
    assert (cursor["seq"], cursor["hash"]) == (rows[-1][0], rows[-1][1])
    # Run again: nothing new, nothing repeated.
    assert ledger.stream(tmp_path, "--to", "file", "--file", str(out), "--once").returncode == 0
    assert len(_events(out)) == len(rows)


def test_masked_values_stay_masked(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    for fmt in ("ocsf", "jsonl"):
        target = out.with_suffix(f".{fmt}")
        checked = ["--validate-events"] if fmt == "ocsf" else []
        proc = ledger.stream(
            tmp_path / fmt, "--format", fmt, *checked, "--to", "file", "--file", str(target),
            "--once",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert SECRET_EMAIL.encode() not in target.read_bytes()
    events = _events(out.with_suffix(".ocsf"))
    intent = next(
        e for e in events if e["unmapped"]["airflow_hoop"]["body"].get("script") == MASKED_SQL
    )
    session = intent["unmapped"]["airflow_hoop"]["body"]["session_id"]
    result = next(
        e
        for e in events
        if e["metadata"]["event_code"] == "session.result"
        and e["metadata"]["correlation_uid"] == session
    )
    masking = result["unmapped"]["airflow_hoop"]["body"]["masking"]
    assert masking["columns"] == {"email": 1} and masking["total_redact_count"] >= 1


class SlowReceiver(ThreadingHTTPServer):
    """Stores every batch it receives (before answering), slowly: a kill lands mid-stream."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Slow)
        self.seqs: list[int] = []
        self.batches = 0
        self.lock = threading.Lock()


class _Slow(BaseHTTPRequestHandler):
    server: SlowReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.seqs += [json.loads(line)["seq"] for line in body.splitlines()]
            self.server.batches += 1
        time.sleep(0.05)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_sigkill_mid_stream_loses_nothing_and_repeats_one_batch_at_most(
    ledger: Ledger, tmp_path: Path
) -> None:
    receiver = SlowReceiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/ingest"
    args = ["--format", "jsonl", "--to", "http", "--url", url, "--http-format", "ndjson"]
    args += ["--batch-size", "5"]
    try:
        proc = subprocess.Popen(
            [*ledger.command(tmp_path), *args, "--follow"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while receiver.batches < 4:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the stream delivered nothing"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        cursor = json.loads((tmp_path / "cursor.json").read_text())["seq"]
        before = list(receiver.seqs)
        rows = ledger.rows()
        assert cursor < rows[-1][0], "the kill came after the end: no mid-way restart"
        again = subprocess.run(
            [*ledger.command(tmp_path), *args, "--once"], capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr
    finally:
        receiver.shutdown()
        receiver.server_close()
    seqs = receiver.seqs
    first_seen = list(dict.fromkeys(seqs))
    assert first_seen == [r[0] for r in rows]  # nothing lost, first deliveries in order
    repeated = sorted({s for s in seqs if seqs.count(s) > 1})
    # Only records after the cursor at the kill, at most one batch of them, delivered again.
    assert all(cursor < s <= cursor + 5 for s in repeated), (cursor, repeated)
    assert set(before) >= set(repeated)
    assert all(seqs.count(s) <= 2 for s in seqs)


def test_a_forged_record_stops_the_stream_naming_its_seq(ledger: Ledger, tmp_path: Path) -> None:
    rows = ledger.rows()
    seq = next(s for s, _, body in rows if '"kind":"session.intent"' in body and s > 10)
    with psycopg.connect(ledger.stack.admin_dsn(ledger.db), autocommit=True) as conn:
        try:
            with unlocked(conn):
                conn.execute(
                    'UPDATE ledger SET body = replace(body, \'"script":"SELECT \', '
                    '\'"script":"SELECT 1+\') WHERE seq = %s',
                    (seq,),
                )
            out = tmp_path / "events.jsonl"
            proc = ledger.stream(tmp_path, "--to", "file", "--file", str(out), "--once")
        finally:
            with unlocked(conn):
                conn.execute("DELETE FROM ledger")
                conn.execute("INSERT INTO ledger SELECT * FROM ledger_pristine")
    assert proc.returncode == 1, proc.stderr
    assert f"[ledger stream] record {seq} was changed" in proc.stderr
    delivered = [e["unmapped"]["airflow_hoop"]["seq"] for e in _events(out)]
    assert delivered == list(range(1, seq))  # everything before it, nothing from it on
    assert "SELECT 1+" not in out.read_text()
    assert json.loads((tmp_path / "cursor.json").read_text())["seq"] == seq - 1


def test_a_ledger_rewritten_behind_the_cursor_is_refused(ledger: Ledger, tmp_path: Path) -> None:
    (tmp_path / "cursor.json").write_text(json.dumps({"v": 1, "seq": 5, "hash": "ab" * 32}))
    proc = ledger.stream(tmp_path, "--once")
    assert proc.returncode == 1
    assert "record 6 does not link to the cursor's hash" in proc.stderr
    assert proc.stdout == ""


def test_the_gateway_side_stream_follows_the_ledger(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "gateway-events.jsonl"
    siem = {
        "enabled": True,
        "format": "ocsf",
        "sink": {"kind": "file", "path": str(out)},
        "cursor_file": str(tmp_path / "gw-cursor.json"),
        "poll_seconds": 0.1,
    }
    settings = {"checkpoints": {"enabled": False}, "siem_stream": siem}
    with extra_gateway(ledger.stack, "siem-side", database_dsn=ledger.dsn, **settings) as url:
        head = ledger.rows()[-1][0]
        _wait_for(lambda: _last_seq(out) >= head)
        # Still following: a new step's records arrive within the poll.
        with step_client(ledger.stack, new_step(dag_id="test_siem", task_id="late"), url) as c:
            assert c.exec("SELECT 42").status_code == 200
        # The step's end and its revoke included: the stream catches up with the head.
        _wait_for(lambda: _last_seq(out) >= ledger.rows()[-1][0])
    rows = ledger.rows()
    events = _events(out)
    for event in events:
        EVENT.validate_python(event)
    assert [e["unmapped"]["airflow_hoop"]["seq"] for e in events] == [
        r[0] for r in rows[: len(events)]
    ]
    assert len(events) > head


def _last_seq(path: Path) -> int:
    if not path.exists() or not path.read_text():
        return 0
    return int(_events(path)[-1]["unmapped"]["airflow_hoop"]["seq"])


def _wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_bench_runs_and_reports_its_goals(tmp_path: Path) -> None:
    """Smoke test of bench/stream.py (tiny N, its own stack): the report has the three goals."""
    bench = Path(__file__).resolve().parents[2] / "bench"
    out = tmp_path / "stream.json"
    proc = subprocess.run(
        [sys.executable, str(bench / "stream.py"), "--records", "400", "--runs", "1",
         "--rate", "200", "--seconds", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=bench.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = [row for table in report["tables"] for row in table["rows"]]
    goals = [row["goal"] for row in rows if row["goal"]]
    assert goals == [
        ">= 20,000 records/s (median)",
        ">= 5,000 records/s (median)",
        "<= 2 s (median)",
    ]
    assert all(row["median"] > 0 for row in rows)


def test_the_gateway_side_stream_survives_a_sink_that_is_down(
    ledger: Ledger, tmp_path: Path
) -> None:
    """The collector is down when the gateway starts: steps still run (the stream is beside
    them, never in their way), and once the collector is up every record arrives, in order."""
    from support.gateway_support import free_port

    port = free_port()
    siem = {
        "enabled": True,
        "format": "jsonl",
        "sink": {
            "kind": "http",
            "url": f"http://127.0.0.1:{port}/ingest",
            "batch_format": "ndjson",
            "max_attempts": 1,
        },
        "cursor_file": str(tmp_path / "gw-cursor.json"),
        "poll_seconds": 0.1,
        "retry_seconds": 0.2,
    }
    settings = {"checkpoints": {"enabled": False}, "siem_stream": siem}
    with extra_gateway(ledger.stack, "siem-down", database_dsn=ledger.dsn, **settings) as url:
        with step_client(ledger.stack, new_step(dag_id="test_siem", task_id="down"), url) as c:
            assert c.exec("SELECT 7").status_code == 200
        time.sleep(0.5)  # a few failed deliveries
        assert not (tmp_path / "gw-cursor.json").exists()
        receiver = SlowReceiver(port)
        thread = threading.Thread(target=receiver.serve_forever, daemon=True)
        thread.start()
        try:
            _wait_for(lambda: bool(receiver.seqs) and receiver.seqs[-1] >= ledger.rows()[-1][0])
        finally:
            receiver.shutdown()
            receiver.server_close()
    assert receiver.seqs == [r[0] for r in ledger.rows()[: len(receiver.seqs)]]
    log = (Path(ledger.stack.run_dir) / "gateway-siem-down.log").read_text()
    assert "[SIEM sink] the HTTP sink http://127.0.0.1:" in log


def test_signed_only_never_delivers_a_rewritten_ledger(ledger: Ledger, tmp_path: Path) -> None:
    """The database administrator changes a record, recomputes the chain after it and makes
    every later checkpoint's head match: links hold, only the Vault signatures cannot follow.
    With the key pinned (read from Vault, not through the gateway) and --signed-only, not one
    record of the rewritten range reaches the SIEM, and the stream names the checkpoint."""
    from support.ledger_db import vault_key_file

    from airflow_hoop.ledger.canonical import canonical
    from airflow_hoop.ledger.chain import link_hash

    rows = ledger.rows()
    changed = next(s for s, _, body in rows if '"kind":"session.intent"' in body and s > 10)
    prev, hashes, updates = "00" * 32, {}, []
    for seq, digest, body in rows:
        record = json.loads(body)
        if seq >= changed:
            if seq == changed:
                record["actor"] = "someone-else"
            record["prev_hash"] = prev
            if record["body"]["kind"] == "checkpoint":
                statement = record["body"]["statement"]
                statement["head_hash"] = hashes.get(statement["last_seq"], statement["head_hash"])
            data = canonical(record)
            digest = link_hash(prev, data)
            updates.append((data.decode(), digest, seq))
        prev = hashes[seq] = digest
    forged_checkpoint = next(
        s for s, _, body in rows if s > changed and '"kind":"checkpoint"' in body
    )
    key = vault_key_file(ledger.stack, tmp_path / "key.json")
    out = tmp_path / "events.jsonl"
    with psycopg.connect(ledger.stack.admin_dsn(ledger.db), autocommit=True) as conn:
        try:
            with unlocked(conn):
                for body, digest, seq in updates:
                    conn.execute(
                        "UPDATE ledger SET body = %s, hash = %s WHERE seq = %s", (body, digest, seq)
                    )
            blind = ledger.stream(tmp_path / "blind", "--to", "file", "--file", str(out), "--once")
            pinned = ledger.stream(
                tmp_path, "--public-key", str(key), "--signed-only",
                "--to", "file", "--file", str(out.with_suffix(".signed")), "--once",
            )  # fmt: skip
        finally:
            with unlocked(conn):
                conn.execute("DELETE FROM ledger")
                conn.execute("INSERT INTO ledger SELECT * FROM ledger_pristine")
    # Links alone cannot tell: the rewritten chain is consistent.
    assert blind.returncode == 0, blind.stderr
    assert pinned.returncode == 1, pinned.stderr
    assert f"record {forged_checkpoint} is a checkpoint whose signature does not verify" in (
        pinned.stderr
    )
    signed = out.with_suffix(".signed")
    delivered = (
        [e["unmapped"]["airflow_hoop"]["seq"] for e in _events(signed)] if (signed.exists()) else []
    )
    assert all(s < changed for s in delivered)
    assert "someone-else" not in (signed.read_text() if signed.exists() else "")


def test_signed_only_on_an_untouched_ledger_delivers_every_signed_record(
    ledger: Ledger, tmp_path: Path
) -> None:
    from support.ledger_db import vault_key_file

    key = vault_key_file(ledger.stack, tmp_path / "key.json")
    out = tmp_path / "events.jsonl"
    proc = ledger.stream(
        tmp_path, "--public-key", str(key), "--signed-only", "--to", "file", "--file", str(out),
        "--once",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = ledger.rows()
    last_signed = max(
        json.loads(body)["body"]["statement"]["last_seq"]
        for _, _, body in rows
        if '"kind":"checkpoint"' in body
    )
    events = _events(out)
    assert [e["unmapped"]["airflow_hoop"]["seq"] for e in events] == list(range(1, last_signed + 1))
    assert all(e["unmapped"]["airflow_hoop"]["covering_checkpoint"] for e in events)


def test_the_gateway_side_stream_signed_only_reads_the_key_from_vault(
    ledger: Ledger, tmp_path: Path
) -> None:
    out = tmp_path / "gw-signed.jsonl"
    siem = {
        "enabled": True,
        "signed_only": True,
        "sink": {"kind": "file", "path": str(out)},
        "cursor_file": str(tmp_path / "gw-cursor.json"),
        "poll_seconds": 0.1,
    }
    rows = ledger.rows()
    last_signed = max(
        json.loads(body)["body"]["statement"]["last_seq"]
        for _, _, body in rows
        if '"kind":"checkpoint"' in body
    )
    settings = {"checkpoints": {"enabled": False}, "siem_stream": siem}
    with extra_gateway(ledger.stack, "siem-signed", database_dsn=ledger.dsn, **settings):
        _wait_for(lambda: _last_seq(out) >= last_signed)
        time.sleep(0.5)  # and nothing past it: the rest is not signed yet
    events = _events(out)
    assert [e["unmapped"]["airflow_hoop"]["seq"] for e in events] == list(range(1, last_signed + 1))
