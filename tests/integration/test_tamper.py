"""The tamper suite: a real ledger, written by real steps through a gateway and signed by Vault's
transit key, is changed as the PostgreSQL superuser (or its anchor or bundle is edited), and
``airflow-hoop audit verify`` must name the right failure at the right sequence.

The ledger lives in a database of its own (same Postgres, same Vault), so that rewriting it
cannot disturb the other tests; it is restored from a pristine copy after every case. A
writer gateway produces the traffic and its checkpoints; a reader gateway with checkpoints
off serves the ledger while it is tampered with, so nothing signs the tampered state.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support.gateway_support import extra_gateway, new_step, step_client
from support.ledger_db import drop_db, fresh_gateway_db, unlocked, vault_key_file

from airflow_hoop.cli.audit import audit_export, audit_verify
from airflow_hoop.devstack import vault_setup
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.batch import key_id, public_raw, sign_batch
from airflow_hoop.ledger.canonical import canonical, sha256_hex
from airflow_hoop.ledger.chain import link_hash
from airflow_hoop.ledger.checkpoint import (
    checkpoint_hash,
    split_vault_signature,
    statement_digest,
)
from airflow_hoop.ledger.records import (
    Checkpoint,
    CheckpointStatement,
    GatewayKeyCertified,
    KeyCertificateStatement,
)

#: Checkpoints of the writer gateway: small, so the little traffic here spans several.
WRITER_CHECKPOINTS = {"every_records": 5, "interval_seconds": 0.5, "poll_seconds": 0.05}
_COLUMNS = (
    "time, kind, dag_id, task_id, run_id, try_number, map_index, connection, session_id, body, hash"
)


@dataclass
class Tamper:
    stack: StackInfo
    db: str
    url: str
    anchor: Path
    key_file: Path
    pristine_anchor: Path
    dsn: str = ""

    def gateway_role(self) -> psycopg.Connection:
        """The gateway's own database role (its password is in the gateway's settings)."""
        return psycopg.connect(self.dsn, autocommit=True)

    def head(self) -> tuple[int, str]:
        with self.admin() as conn:
            row = conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        return row[0], row[1]

    def insert(self, record: dict, batch_sig: str | None = None) -> int:
        """Insert a correctly chained record at the head, as the gateway role."""
        seq, prev = self.head()
        record = {**record, "seq": seq + 1, "prev_hash": prev}
        data = canonical(record)
        with self.gateway_role() as conn:
            conn.execute(
                "INSERT INTO ledger (seq, time, kind, body, hash, batch_sig) "
                "VALUES (%s, now(), %s, %s, %s, %s)",
                (seq + 1, record["body"]["kind"], data.decode(), link_hash(prev, data), batch_sig),
            )
        return seq + 1

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.stack.admin_dsn(self.db), autocommit=True)

    def rows(self) -> list[tuple[int, str, str]]:
        with self.admin() as conn:
            return conn.execute("SELECT seq, kind, body FROM ledger ORDER BY seq").fetchall()

    def verify(self, *extra: str, anchor: bool = True) -> Result:
        args = ["--gateway", self.url, "--api-key", self.stack.auditor_api_key]
        args += ["--public-key", str(self.key_file)]
        if anchor:
            args += ["--anchor", str(self.anchor)]
        return CliRunner().invoke(audit_verify, [*args, *extra])


def run_steps(stack: StackInfo, url: str, steps: int, statements: int) -> None:
    errors: list[str] = []

    def one(index: int) -> None:
        with step_client(stack, new_step(dag_id="test_tamper", task_id=f"t{index}"), url) as c:
            for i in range(statements):
                response = c.exec(f"SELECT {index * 100 + i}")
                if response.status_code != 200:
                    errors.append(response.text)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(steps)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.fixture(scope="module")
def tamper(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tamper]:
    db, dsn = fresh_gateway_db(stack, "hoop_tamper")
    base = tmp_path_factory.mktemp("tamper")
    anchor = base / "anchor"
    try:
        checkpoints = {**WRITER_CHECKPOINTS, "anchor_dir": str(anchor)}
        with extra_gateway(
            stack, "tamper-writer", database_dsn=dsn, checkpoints=checkpoints
        ) as url:
            # Three rounds, each followed by a pause longer than the signer's interval: at
            # least three checkpoints however fast the traffic runs.
            for _ in range(3):
                run_steps(stack, url, steps=3, statements=2)
                time.sleep(WRITER_CHECKPOINTS["interval_seconds"] + 0.5)
        reader = {"checkpoints": {"enabled": False}}
        with extra_gateway(stack, "tamper-reader", database_dsn=dsn, **reader) as url:
            # The writer signed a last checkpoint as it stopped: every record is under a
            # checkpoint but the reader's key certificate (under its batch signature; the
            # reader signs the manifests of the exports here).
            with psycopg.connect(stack.admin_dsn(db), autocommit=True) as conn:
                conn.execute("CREATE TABLE ledger_pristine AS SELECT * FROM ledger")
            shutil.copytree(anchor, base / "anchor-pristine")
            yield Tamper(
                stack,
                db,
                url,
                anchor,
                vault_key_file(stack, base / "key.json"),
                base / "anchor-pristine",
                dsn,
            )
    finally:
        drop_db(stack, db)


@pytest.fixture
def t(tamper: Tamper) -> Iterator[Tamper]:
    """Each case starts from the pristine ledger and anchor, and restores them after."""
    yield tamper
    with tamper.admin() as conn, unlocked(conn):
        conn.execute("DELETE FROM ledger")
        conn.execute("INSERT INTO ledger SELECT * FROM ledger_pristine")
    shutil.rmtree(tamper.anchor)
    shutil.copytree(tamper.pristine_anchor, tamper.anchor)


def failed_at(result: Result, seq: int | None, kind: str) -> bool:
    where = f"seq {seq}" if seq is not None else ""
    return (
        result.exit_code == 1
        and f"FAILED at {where}" in result.output
        and f": {kind}: " in (result.output)
    )


def intent_seq(t: Tamper, nth: int = 0) -> int:
    return [seq for seq, kind, _ in t.rows() if kind == "session.intent"][nth]


def checkpoint_rows(t: Tamper) -> list[tuple[int, Checkpoint]]:
    return [
        (seq, Checkpoint.model_validate(json.loads(body)["body"]))
        for seq, kind, body in t.rows()
        if kind == "checkpoint"
    ]


# -- the cases ---------------------------------------------------------------------------------
def test_untouched_ledger_verifies(t: Tamper) -> None:
    checkpoints = checkpoint_rows(t)
    assert len(checkpoints) >= 3
    result = t.verify()
    assert result.exit_code == 0, result.output
    assert f"{len(checkpoints)} checkpoints matching the anchor" in result.output


def test_a_field_changed_in_one_record(t: Tamper) -> None:
    seq = intent_seq(t, 5)
    with t.admin() as conn, unlocked(conn):
        conn.execute(
            'UPDATE ledger SET body = regexp_replace(body, \'"script":"SELECT \', '
            '\'"script":"SELECT 1+\') WHERE seq = %s',
            (seq,),
        )
    result = t.verify()
    assert failed_at(result, seq, "content changed"), result.output


def test_a_record_deleted_in_the_middle(t: Tamper) -> None:
    seq = intent_seq(t, 4)
    with t.admin() as conn, unlocked(conn):
        conn.execute("DELETE FROM ledger WHERE seq = %s", (seq,))
    assert failed_at(t.verify(), seq, "record missing")


def test_two_records_swapped(t: Tamper) -> None:
    seq = intent_seq(t, 3)
    with t.admin() as conn, unlocked(conn):
        for a, b in ((seq, seq + 1), (seq + 1, seq)):
            conn.execute(
                f"UPDATE ledger SET ({_COLUMNS}) = (SELECT {_COLUMNS} FROM ledger_pristine "
                "WHERE seq = %s) WHERE seq = %s",
                (b, a),
            )
    result = t.verify()
    assert failed_at(result, seq, "reordered"), result.output


def test_the_last_records_deleted(t: Tamper) -> None:
    rows = t.rows()
    head, k = rows[-1][0], 5
    with t.admin() as conn, unlocked(conn):
        conn.execute("DELETE FROM ledger WHERE seq > %s", (head - k,))
    result = t.verify()
    assert failed_at(result, head - k + 1, "tail truncated"), result.output
    # The cut is invisible to the database alone: it is the anchor that proves it.
    assert t.verify(anchor=False).exit_code == 0


def test_the_whole_chain_recomputed_after_a_change(t: Tamper) -> None:
    seq = intent_seq(t, 8)
    rows = [(s, b) for s, _, b in t.rows()]
    prev, rewritten = None, []
    for s, body in rows:
        if s < seq:
            prev = link_hash(prev or "00" * 32, body.encode())
            continue
        record = json.loads(body)
        if s == seq:
            record["body"]["script"] = "SELECT 'rewritten'"
        record["prev_hash"] = prev
        data = canonical(record)
        prev = link_hash(prev, data)
        rewritten.append((data.decode(), prev, s))
    with t.admin() as conn, unlocked(conn):
        conn.cursor().executemany(
            "UPDATE ledger SET body = %s, hash = %s WHERE seq = %s", rewritten
        )
    covering = next(st for _, c in checkpoint_rows(t) if (st := c.statement).last_seq >= seq)
    result = t.verify()
    assert failed_at(result, covering.first_seq, "signature invalid"), result.output
    assert covering.first_seq <= seq <= covering.last_seq
    assert "changed and the chain recomputed" in result.output


def test_a_checkpoint_forged_without_the_transit_key(t: Tamper) -> None:
    head_seq = t.rows()[-1][0]
    with t.admin() as conn:
        head_hash = conn.execute("SELECT hash FROM ledger WHERE seq = %s", (head_seq,)).fetchone()[
            0
        ]
    last = checkpoint_rows(t)[-1][1].statement
    statement = CheckpointStatement(
        number=last.number + 1,
        first_seq=last.last_seq + 1,
        last_seq=head_seq,
        head_hash=head_hash,
        time=datetime.now(timezone.utc),
        prev_checkpoint=checkpoint_hash(last),
    )
    attacker = Ed25519PrivateKey.generate()
    forged = Checkpoint(
        statement=statement,
        key_name=vault_setup.CHECKPOINT_KEY,
        key_version=1,
        signature=base64.b64encode(attacker.sign(statement_digest(statement))).decode(),
    )
    record = {
        "v": 1,
        "seq": head_seq + 1,
        "time": statement.time.isoformat().replace("+00:00", "Z"),
        "prev_hash": head_hash,
        "step": None,
        "actor": "gateway",
        "body": forged.model_dump(mode="json"),
    }
    data = canonical(record)
    with t.admin() as conn:  # an INSERT: the triggers do not even need lifting
        conn.execute(
            "INSERT INTO ledger (seq, time, kind, body, hash) VALUES (%s, now(), 'checkpoint', %s, %s)",
            (head_seq + 1, data.decode(), link_hash(head_hash, data)),
        )
    result = t.verify()
    assert failed_at(result, head_seq + 1, "signature invalid"), result.output


def test_an_anchor_file_edited(t: Tamper) -> None:
    seq, checkpoint = checkpoint_rows(t)[1]
    path = t.anchor / f"checkpoint-{checkpoint.statement.number:012d}.json"
    path.chmod(0o644)
    data = json.loads(path.read_bytes())
    data["statement"]["last_seq"] -= 1
    path.write_bytes(canonical(data))
    result = t.verify()
    assert failed_at(result, seq, "anchor mismatch"), result.output


def test_a_bundle_file_edited_after_export(t: Tamper, tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    bundle = tmp_path / "bundle"
    window = ["--since", (now - timedelta(hours=1)).isoformat(), "--until", now.isoformat()]
    source = ["--gateway", t.url, "--api-key", t.stack.auditor_api_key]
    export = CliRunner().invoke(
        audit_export,
        [*source, "--public-key", str(t.key_file), *window, "--out", str(bundle)],
    )
    assert export.exit_code == 0, export.output

    def verify_bundle() -> Result:
        args = ["--bundle", str(bundle), "--public-key", str(t.key_file)]
        return CliRunner().invoke(audit_verify, args)

    assert verify_bundle().exit_code == 0
    records = bundle / "records.jsonl"
    original = records.read_bytes()
    lines = original.splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if b'"kind":"session.intent"' in line)
    seq = json.loads(lines[index])["seq"]
    lines[index] = lines[index].replace(b'"script":"SELECT ', b'"script":"SELECT 7+')
    records.write_bytes(b"".join(lines))
    assert failed_at(verify_bundle(), seq, "content changed")
    records.write_bytes(original)
    report = bundle / "report.html"
    report.write_text(report.read_text().replace("No database user was shared", "All fine"))
    result = verify_bundle()
    assert failed_at(result, None, "report changed"), result.output
    assert "report.html is not the report of the verified records" in result.output


def _export(t: Tamper, bundle: Path) -> None:
    now = datetime.now(timezone.utc)
    window = ["--since", (now - timedelta(hours=1)).isoformat(), "--until", now.isoformat()]
    source = ["--gateway", t.url, "--api-key", t.stack.auditor_api_key, "--anchor", str(t.anchor)]
    export = CliRunner().invoke(
        audit_export, [*source, "--public-key", str(t.key_file), *window, "--out", str(bundle)]
    )
    assert export.exit_code == 0, export.output


def _verify_bundle(t: Tamper, bundle: Path, *extra: str) -> Result:
    args = ["--bundle", str(bundle), "--public-key", str(t.key_file), *extra]
    return CliRunner().invoke(audit_verify, args)


def _fix_digests(bundle: Path, manifest: dict) -> None:
    for name in manifest["files"]:
        data = (bundle / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_a_reworded_report_with_its_digests_fixed(t: Tamper, tmp_path: Path) -> None:
    """The issue's attack: a DELETE re-worded as a SELECT in the report, digests fixed."""
    bundle = tmp_path / "bundle"
    _export(t, bundle)
    csv_file = bundle / "report.csv"
    text = csv_file.read_text()
    assert "SELECT " in text
    csv_file.write_text(text.replace("SELECT ", "SELECT 1 -- ", 1))
    # Digests fixed, but the manifest is signed: that alone is caught...
    _fix_digests(bundle, json.loads((bundle / "manifest.json").read_text()))
    result = _verify_bundle(t, bundle)
    assert failed_at(result, None, "signature invalid"), result.output
    assert "manifest.json is not the manifest the gateway signed" in result.output


def test_a_reworded_report_under_the_signed_manifest(t: Tamper, tmp_path: Path) -> None:
    """...and a report re-worded under the untouched, signed manifest: the verifier renders the
    report from the verified records itself, and names the file that differs."""
    bundle = tmp_path / "bundle"
    _export(t, bundle)
    clean = _verify_bundle(t, bundle)
    assert clean.exit_code == 0, clean.output
    csv_file = bundle / "report.csv"
    csv_file.write_text(csv_file.read_text().replace("SELECT ", "SELECT 1 -- ", 1))
    result = _verify_bundle(t, bundle)
    assert failed_at(result, None, "report changed"), result.output
    assert "report.csv is not the report of the verified records" in result.output


def test_a_manifest_without_its_signature(t: Tamper, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    _export(t, bundle)
    (bundle / "manifest.sig").unlink()
    result = _verify_bundle(t, bundle)
    assert failed_at(result, None, "signature invalid"), result.output
    assert "the manifest carries no signature" in result.output


def test_a_trimmed_bundle_against_the_anchor(t: Tamper, tmp_path: Path) -> None:
    """Cut back to an earlier checkpoint, the manifest's counts and digests made to fit."""
    bundle = tmp_path / "bundle"
    _export(t, bundle)
    lines = (bundle / "records.jsonl").read_bytes().splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    cps = [i for i, r in enumerate(records) if r["body"]["kind"] == "checkpoint"]
    cut = cps[-3]  # keep up to the third-last checkpoint
    kept, checkpoint = records[: cut + 1], records[cut]["body"]["statement"]["number"]
    (bundle / "records.jsonl").write_bytes(b"".join(lines[: cut + 1]))
    last = kept[-1]["seq"]
    batches = (bundle / "batches.jsonl").read_bytes().splitlines(keepends=True)
    (bundle / "batches.jsonl").write_bytes(
        b"".join(b for b in batches if json.loads(b)["last_seq"] <= last)
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["range"].update(last_seq=last, records=len(kept))
    manifest["window"].update(last_seq=last, records=len(kept))
    _fix_digests(bundle, manifest)
    result = _verify_bundle(t, bundle, "--anchor", str(t.anchor))
    assert failed_at(result, None, "bundle incomplete"), result.output
    assert f"bundle ends at checkpoint {checkpoint} but the anchor holds checkpoint" in (
        result.output
    )
    assert "covering this window" in result.output


def test_verify_exit_codes_and_step_tokens(t: Tamper, stack: StackInfo) -> None:
    args = ["--gateway", "http://127.0.0.1:9", "--api-key", "hpk_x"]
    unreachable = CliRunner().invoke(audit_verify, [*args, "--public-key", str(t.key_file)])
    assert unreachable.exit_code == 2 and "[gateway]" in unreachable.output
    with step_client(stack, new_step(dag_id="test_tamper"), t.url) as step:
        for path in ("/api/airflow-hoop/ledger/stream", "/api/airflow-hoop/ledger/checkpoints"):
            assert step.get(path).status_code == 403


# -- no false alarm at scale -------------------------------------------------------------------
BULK_RECORDS = 100_000
BULK_WRITERS = 32


async def _write_bulk(stack: StackInfo, dsn: str, anchor: Path) -> int:
    """Concurrent steps writing through the gateway's own store and signer, in-process.

    Not through HTTP: 100,000 records through real execs take several minutes on this
    machine, over the test suite's budget. The code path below the HTTP layer is the real one:
    ``GatewayStore.append``/``begin_session``/``finish_session`` (group commit, session rows)
    and ``CheckpointSigner`` signing with Vault's transit key, concurrently.
    """
    import asyncio

    from airflow_hoop.gateway.db.store import GatewayStore, SessionEnd, SessionRow
    from airflow_hoop.gateway.ledger_io.checkpoints import CheckpointSigner
    from airflow_hoop.gateway.ledger_io.process_key import ProcessKeys
    from airflow_hoop.gateway.settings import CheckpointSettings, GatewaySettings
    from airflow_hoop.gateway.vault import GatewayVaultClient
    from airflow_hoop.ledger.records import (
        CredentialIssued,
        CredentialRevoked,
        SessionIntent,
        SessionResult,
    )

    settings = GatewaySettings.load(stack.gateway_settings_path)
    store = GatewayStore(dsn, min_size=4, max_size=8)
    vault = GatewayVaultClient(settings.vault)
    await store.open()
    await vault.login()
    keys = ProcessKeys(settings.checkpoints, store, vault)
    await keys.start()
    signer = CheckpointSigner(
        CheckpointSettings(
            every_records=1000, interval_seconds=1.0, poll_seconds=0.2, anchor_dir=str(anchor)
        ),
        store,
        vault,
    )
    signer.start()
    statements = 20
    per_step = 2 + 2 * statements
    steps = -(-BULK_RECORDS // per_step)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(steps):
        queue.put_nowait(i)

    async def one_step(i: int) -> None:
        step = new_step(dag_id="test_bulk", task_id=f"task_{i % 50}")
        user = f"af_test-bulk-{i}"
        lease = f"database/creds/warehouse-rw/{uuid.uuid4().hex}"
        issued = CredentialIssued(
            connection="warehouse", lease_id=lease, db_user=user, vault_role="warehouse-rw",
            ttl_seconds=900,
        )  # fmt: skip
        await store.append(step, step.key, issued)
        for n in range(statements):
            script = f"SELECT {n} FROM bulk WHERE step = {i}"
            sid = uuid.uuid4()
            intent = SessionIntent(
                session_id=str(sid), connection="warehouse", script=script,
                script_sha256=sha256_hex(script), db_user=user,
            )  # fmt: skip
            result = SessionResult(
                session_id=str(sid), connection="warehouse", status="success", exit_code=0,
                rowcount=1, rows_returned=1, output_sha256=sha256_hex(str(n)), duration_ms=0.4,
            )  # fmt: skip
            if n % 10:  # the ledger alone (what most of the time goes into)
                await store.append(step, step.key, intent)
                await store.append(step, step.key, result)
                continue
            # and, for one statement in ten, with its session row, as an exec does
            row = SessionRow(
                id=sid, connection="warehouse", step_key=step.key, dag_id=step.dag_id,
                task_id=step.task_id, run_id=step.run_id, try_number=1, map_index=-1,
                status="open", script=script, start_date=datetime.now(timezone.utc),
            )  # fmt: skip
            await store.begin_session(row, step, intent)
            end = SessionEnd(exit_code=0, output_status="success", output=f"{n}\n", truncated=False)
            await store.finish_session(sid, end, step, step.key, result)
        revoked = CredentialRevoked(
            connection="warehouse", lease_id=lease, db_user=user, reason="step-end"
        )
        await store.append(step, step.key, revoked)

    async def worker() -> None:
        while not queue.empty():
            await one_step(queue.get_nowait())

    try:
        await asyncio.gather(*(worker() for _ in range(BULK_WRITERS)))
    finally:
        await signer.stop()  # signs the tail
        await keys.stop()
        await store.close()
        vault.close()
    return steps * per_step + 1  # and the process key's certificate


def test_no_false_alarm_on_100k_records_from_concurrent_steps(
    stack: StackInfo, tmp_path: Path
) -> None:
    import asyncio
    import time

    db, dsn = fresh_gateway_db(stack, "hoop_bulk")
    anchor = tmp_path / "anchor"
    try:
        started = time.monotonic()
        written = asyncio.run(_write_bulk(stack, dsn, anchor))
        elapsed = time.monotonic() - started
        print(f"\n{written} records by {BULK_WRITERS} concurrent steps in {elapsed:.1f}s")
        assert written >= BULK_RECORDS
        with psycopg.connect(stack.admin_dsn(db)) as conn:
            checkpoints = conn.execute(
                "SELECT count(*) FROM ledger WHERE kind = 'checkpoint'"
            ).fetchone()[0]
        # Signed while the writers ran (every 1000 records, looked at every 0.2 s).
        assert checkpoints >= written // 2000
        with extra_gateway(
            stack, "bulk-reader", database_dsn=dsn, checkpoints={"enabled": False}
        ) as url:
            key = vault_key_file(stack, tmp_path / "key.json")
            args = ["--gateway", url, "--api-key", stack.auditor_api_key]
            result = CliRunner().invoke(
                audit_verify, [*args, "--public-key", str(key), "--anchor", str(anchor)]
            )
        assert result.exit_code == 0, result.output
        # (and the reader's key certificate, written as it started)
        assert f"OK: {written + checkpoints + 1} records" in result.output
        assert f"{checkpoints} checkpoints matching the anchor" in result.output
    finally:
        drop_db(stack, db)


# -- records only the gateway can write --------------------------------------------------------
def _intent_record(script: str) -> dict:
    sid = str(uuid.uuid4())
    return {
        "v": 1,
        "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "step": None,
        "actor": "gateway",
        "body": {
            "kind": "session.intent",
            "session_id": sid,
            "connection": "warehouse",
            "script": script,
            "script_sha256": sha256_hex(script),
            "db_user": None,
        },
    }


def test_a_forged_insert_after_the_last_checkpoint(t: Tamper) -> None:
    seq = t.insert(_intent_record("DROP TABLE payroll_salaries"))
    result = t.verify()
    assert failed_at(result, seq, "record not signed"), result.output
    assert "record not signed by a certified gateway key" in result.output


def test_a_forged_insert_before_a_checkpoint_is_refused_and_flagged(
    t: Tamper, stack: StackInfo
) -> None:
    """The issue's attack: the gateway role inserts a chained record; the next checkpoint is
    signed over it. The gateway that finds it chains nothing after it but an alarm record
    naming it (and logs the alarm), and its checkpoint names the seq."""
    seq = t.insert(_intent_record("DROP TABLE payroll_salaries"))
    checkpoints = {**WRITER_CHECKPOINTS, "anchor_dir": str(t.anchor)}
    with extra_gateway(stack, "tamper-writer2", database_dsn=t.dsn, checkpoints=checkpoints) as url:
        run_steps(stack, url, steps=1, statements=1)
        time.sleep(WRITER_CHECKPOINTS["interval_seconds"] + 0.5)
    kinds = {kind: s for s, kind, _ in t.rows() if s > seq}
    assert "ledger.alarm" in kinds and "checkpoint" in kinds
    alarm = next(json.loads(b)["body"] for s, k, b in t.rows() if k == "ledger.alarm")
    assert alarm["found_seq"] == seq
    covering = next(c.statement for s, c in checkpoint_rows(t) if c.statement.last_seq >= seq)
    assert covering.unsigned_from == seq
    log = (Path(stack.run_dir) / "gateway-tamper-writer2.log").read_text()
    assert f"ALARM: ledger seq {seq}" in log
    result = t.verify()
    assert failed_at(result, seq, "record not signed"), result.output


def test_a_signed_batch_replayed_at_another_place(t: Tamper) -> None:
    with t.admin() as conn:
        _seq, body, batch_sig = conn.execute(
            "SELECT seq, body, batch_sig FROM ledger WHERE kind = 'session.intent' "
            "AND batch_sig LIKE '%%.' || seq || '.%%' ORDER BY seq LIMIT 1"
        ).fetchone()
    kid, _first, signature = batch_sig.split(".")
    head, _ = t.head()
    # The record and its signature copied to the head, the signature's start renumbered.
    new_seq = t.insert(json.loads(body), f"{kid}.{head + 1}.{signature}")
    result = t.verify()
    assert failed_at(result, new_seq, "record not signed"), result.output
    assert "does not verify" in result.output


def _certificate(t: Tamper, key: Ed25519PrivateKey, valid: timedelta, sign) -> dict:
    raw = public_raw(key)
    now = datetime.now(timezone.utc)
    statement = KeyCertificateStatement(
        key_id=key_id(raw),
        public_key=base64.b64encode(raw).decode(),
        process="attacker",
        replica="attacker",
        not_before=now - valid - timedelta(minutes=1),
        not_after=now - timedelta(minutes=1) if valid else now + timedelta(hours=1),
    )
    version, signature = sign(statement_digest(statement))
    cert = GatewayKeyCertified(
        statement=statement,
        key_name=vault_setup.CHECKPOINT_KEY,
        key_version=version,
        signature=signature,
    )
    return {
        "v": 1,
        "time": now.isoformat().replace("+00:00", "Z"),
        "step": None,
        "actor": "gateway",
        "body": cert.model_dump(mode="json"),
    }


def _insert_signed(t: Tamper, record: dict, key: Ed25519PrivateKey) -> int:
    """Insert a record under a batch signature made with ``key``."""
    seq, prev = t.head()
    data = canonical({**record, "seq": seq + 1, "prev_hash": prev})
    sig = sign_batch(key, key_id(public_raw(key)), seq + 1, seq + 1, link_hash(prev, data))
    return t.insert(record, sig)


def test_a_forged_key_certificate(t: Tamper) -> None:
    attacker = Ed25519PrivateKey.generate()
    key = Ed25519PrivateKey.generate()

    def sign(digest: bytes) -> tuple[int, str]:
        return 1, base64.b64encode(attacker.sign(digest)).decode()

    cert_seq = _insert_signed(t, _certificate(t, key, timedelta(0), sign), key)
    _insert_signed(t, _intent_record("DROP TABLE payroll_salaries"), key)
    result = t.verify()
    assert failed_at(result, cert_seq, "signature invalid"), result.output
    assert "forged key certificate" in result.output


def test_an_expired_key_certificate(t: Tamper, stack: StackInfo) -> None:
    """Vault really certified the key, but its validity ended: a stolen old process key."""
    key = Ed25519PrivateKey.generate()
    client = vault_setup.vault_client(stack.bao_addr, stack.bao_root_token)

    def sign(digest: bytes) -> tuple[int, str]:
        resp = client.secrets.transit.sign_data(
            name=vault_setup.CHECKPOINT_KEY,
            hash_input=base64.b64encode(digest).decode(),
            mount_point=vault_setup.TRANSIT_MOUNT,
        )
        version, signature = split_vault_signature(resp["data"]["signature"])
        return version, signature

    try:
        cert = _certificate(t, key, timedelta(hours=1), sign)
    finally:
        client.adapter.close()
    cert_seq = _insert_signed(t, cert, key)
    result = t.verify()
    assert failed_at(result, cert_seq, "record not signed"), result.output
    assert "expired key" in result.output
