"""The dry export of a month: 1,000,000 ledger records over 30 days, exported and verified.

1. Generate: a fresh embedded stack; the records are written with COPY as the PostgreSQL
   superuser (holding the gateway's append and checkpoint locks), built with the ledger's own
   record models, canonical encoding and chain code. Traffic comes in hourly DAG runs
   (720 bursts of about 1,400 records, a few minutes each), as scheduled Airflow traffic
   does. Checkpoints follow the gateway's default rule (every 1,000 records or 30 s with
   traffic) and are signed by Vault's transit key, as the gateway signs them; each is also
   written to the stack's anchor directory. Every record is under a batch signature (one
   batch per step's records, one per checkpoint) of a process key certified by Vault, as a
   gateway writes them (#16); the records follow what the stack's gateway wrote at start.
2. Time ``airflow-hoop audit export --stack RUN --since <30 days ago> --until <now> --out DIR``
   and ``airflow-hoop audit verify --bundle DIR`` (``-n`` runs each), as separate processes:
   wall time, peak RSS of the command (wait4), and the gateway's peak RSS.

Goals: export <= 30 s, verify <= 10 s, bounded memory.

Usage: python bench/export_month.py [--records 1000000] [-n 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import TypeAdapter
from results_model import BenchReport, BenchRow, BenchTable, Machine, Stats, command

from airflow_hoop.devstack import stack
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.gateway.db.appender import LEDGER_LOCK_KEY
from airflow_hoop.gateway.ledger_io.checkpoints import CHECKPOINT_LOCK_KEY
from airflow_hoop.gateway.settings import CheckpointSettings, GatewaySettings
from airflow_hoop.gateway.vault import GatewayVaultClient
from airflow_hoop.ledger.anchor import DirectoryAnchor
from airflow_hoop.ledger.batch import key_id, public_raw, sign_batch
from airflow_hoop.ledger.canonical import canonical, sha256_hex
from airflow_hoop.ledger.chain import GENESIS_HASH, link_hash
from airflow_hoop.ledger.checkpoint import GENESIS_CHECKPOINT, checkpoint_hash, statement_digest
from airflow_hoop.ledger.records import (
    Checkpoint,
    CheckpointStatement,
    CredentialIssued,
    CredentialRevoked,
    GatewayKeyCertified,
    KeyCertificateStatement,
    MaskingRecord,
    PolicyRefused,
    SessionIntent,
    SessionResult,
    StepRef,
)

DAYS = 30
BURSTS = DAYS * 24
CLI = [sys.executable, "-m", "airflow_hoop.cli.main"]
SCRIPTS = [
    "SELECT region, sum(amount) FROM sales WHERE day = %(day)s GROUP BY region",
    "INSERT INTO sales_daily SELECT day, region, sum(amount) FROM sales GROUP BY 1, 2",
    "SELECT count(*) FROM customers WHERE updated_at > now() - interval '1 day'",
    "UPDATE accounts SET balance = balance + %(delta)s WHERE id = %(id)s",
    "COPY (SELECT * FROM orders WHERE day = %(day)s) TO STDOUT",
]


# Bodies as the gateway's models write them; each record copies one and fills it in.
ISSUED = CredentialIssued(
    connection="warehouse", lease_id="", db_user="", vault_role="warehouse-rw", ttl_seconds=900
).model_dump(mode="json")
INTENT = SessionIntent(
    session_id="", connection="warehouse", script="", script_sha256="", parameter_count=1
).model_dump(mode="json")
RESULT = SessionResult(
    session_id="",
    connection="warehouse",
    status="success",
    exit_code=0,
    output_sha256="",
    duration_ms=0.0,
    masking=MaskingRecord(policy="warehouse-pii", version="0" * 64, mode="best-effort"),
).model_dump(mode="json")
REFUSED = PolicyRefused(connection="hr", reason="DAG not allowed").model_dump(mode="json")
REVOKED = CredentialRevoked(
    connection="warehouse", lease_id="", db_user="", reason="step-end"
).model_dump(mode="json")
TIME = TypeAdapter(datetime)


class Generator:
    """Records, chained and checkpointed as the gateway would write them."""

    def __init__(self, vault: Any, anchor: DirectoryAnchor, total: int) -> None:
        self.vault, self.anchor, self.total = vault, anchor, total
        self.rule = CheckpointSettings()  # the gateway's defaults
        self.seq, self.prev = 0, GENESIS_HASH
        self.last_cp: CheckpointStatement | None = None
        self.last_cp_seq = 0
        self.checkpoints = 0
        self.rng = random.Random(7)
        self.key = Ed25519PrivateKey.generate()
        self.key_id = key_id(public_raw(self.key))
        self.pending: list[list[Any]] = []  # rows of the batch not yet signed
        self.batches = 0  # batches since the last checkpoint

    def after(
        self, head: tuple[int, str] | None, last_cp: Checkpoint | None, cp_seq: int, batches: int
    ) -> None:
        """Continue after what the stack's gateway wrote (its key certificate, a checkpoint):
        ``batches`` it signed since its last checkpoint."""
        self.batches = batches
        if head is not None:
            self.seq, self.prev = head
        if last_cp is not None:
            self.last_cp, self.last_cp_seq = last_cp.statement, cp_seq
            self.checkpoints = last_cp.statement.number

    def _certificate(self, start: datetime, end: datetime) -> Iterator[list[Any]]:
        raw = public_raw(self.key)
        statement = KeyCertificateStatement(
            key_id=self.key_id,
            public_key=base64.b64encode(raw).decode(),
            process="bench-export-month",
            replica="bench",
            not_before=start - timedelta(hours=1),
            not_after=end + timedelta(days=1),
        )
        version, signature = self.vault.sign(statement_digest(statement))
        cert = GatewayKeyCertified(
            statement=statement,
            key_name="ledger-checkpoint",
            key_version=version,
            signature=signature,
        )
        self.pending.append(self._row(start, None, "gateway", cert.model_dump(mode="json")))
        yield from self._flush()

    def _flush(self) -> Iterator[list[Any]]:
        """Sign the pending rows as one batch (on its last row) and hand them out."""
        if not self.pending:
            return
        first, last = self.pending[0], self.pending[-1]
        last[12] = sign_batch(self.key, self.key_id, first[0], last[0], last[11])
        self.batches += 1
        yield from self.pending
        self.pending = []

    def rows(self, end: datetime) -> Iterator[list[Any]]:
        start = end - timedelta(days=DAYS)
        yield from self._certificate(start, end)
        per_burst = self.total // BURSTS
        for burst in range(BURSTS):
            t = start + timedelta(hours=burst, minutes=self.rng.randint(0, 20))
            budget = per_burst if burst < BURSTS - 1 else self.total - self.seq
            yield from self._burst(t, budget)
        if self.seq < self.total:  # the last record: a checkpoint that signs all before it
            self.last_cp_seq = -(10**9)
            cp = self._maybe_checkpoint(end - timedelta(seconds=1))
            assert cp is not None
            yield cp

    def _burst(self, t: datetime, budget: int) -> Iterator[tuple[Any, ...]]:
        run_id = f"scheduled__{t:%Y-%m-%dT%H:00:00}"
        written = 0
        task = 0
        while written < budget and self.seq < self.total - 1:
            step = StepRef(dag_id=f"etl_{task % 12}", task_id=f"task_{task}", run_id=run_id)
            task += 1
            user = f"af_{step.dag_id}-{step.task_id}_{self.rng.randrange(16**6):06x}"
            lease = f"database/creds/warehouse-rw/{uuid.uuid4().hex[:24]}"
            bodies = [dict(ISSUED, lease_id=lease, db_user=user)]
            for n in range(self.rng.randint(2, 12)):
                script = self.rng.choice(SCRIPTS)
                sid = str(uuid.uuid4())
                bodies.append(
                    dict(
                        INTENT,
                        session_id=sid,
                        script=script,
                        script_sha256=sha256_hex(script),
                        parameters_sha256=sha256_hex(str(n)),
                        db_user=user,
                    )
                )
                bodies.append(
                    dict(
                        RESULT,
                        session_id=sid,
                        rowcount=n,
                        rows_returned=n,
                        status_message=f"SELECT {n}",
                        output_sha256=sha256_hex(str(n)),
                        duration_ms=1.5 + n,
                    )
                )
            if self.rng.random() < 0.01:
                bodies.append(dict(REFUSED))
            bodies.append(dict(REVOKED, lease_id=lease, db_user=user))
            step_json = step.model_dump(mode="json")
            for body in bodies:
                t += timedelta(milliseconds=self.rng.randint(20, 250))
                self.pending.append(self._row(t, step_json, step.key, body))
                written += 1
                if self._due(t):
                    yield from self._flush()
                    cp = self._maybe_checkpoint(t)
                    if cp is not None:
                        yield cp
                        written += 1
            yield from self._flush()  # a step's records: one batch
        yield from self._flush()
        cp = self._maybe_checkpoint(t + timedelta(seconds=31))  # the burst's tail, signed
        if cp is not None:
            yield cp

    def _due(self, t: datetime) -> bool:
        pending = self.seq - self.last_cp_seq
        age = (t - self.last_cp.time).total_seconds() if self.last_cp else 1e9
        return pending > 0 and (
            pending >= self.rule.every_records or age >= self.rule.interval_seconds
        )

    def _row(
        self, t: datetime, step: dict[str, Any] | None, actor: str, body: dict[str, Any]
    ) -> list[Any]:
        """One ledger row: the record encoded with the ledger's canonical and chain code."""
        self.seq += 1
        record = {
            "v": 1,
            "seq": self.seq,
            "time": TIME.dump_python(t, mode="json"),
            "prev_hash": self.prev,
            "step": step,
            "actor": actor,
            "body": body,
        }
        data = canonical(record)
        self.prev = link_hash(self.prev, data)
        return [
            self.seq,
            t,
            body["kind"],
            step["dag_id"] if step else None,
            step["task_id"] if step else None,
            step["run_id"] if step else None,
            step["try_number"] if step else None,
            step["map_index"] if step else None,
            body.get("connection"),
            body.get("session_id"),
            data.decode(),
            self.prev,
            None,  # batch_sig, on a batch's last row (_flush)
        ]

    def _maybe_checkpoint(self, t: datetime, *, force: bool = False) -> list[Any] | None:
        """A checkpoint row when the gateway's rule says one is due (or ``force``)."""
        pending = self.seq - self.last_cp_seq
        age = (t - self.last_cp.time).total_seconds() if self.last_cp else 1e9
        due = pending >= self.rule.every_records or age >= self.rule.interval_seconds
        if pending <= 0 or not (due or force):
            return None
        last = self.last_cp
        statement = CheckpointStatement(
            number=last.number + 1 if last else 1,
            first_seq=last.last_seq + 1 if last else 1,
            last_seq=self.seq,
            head_hash=self.prev,
            time=t,
            prev_checkpoint=checkpoint_hash(last) if last else GENESIS_CHECKPOINT,
            batches=self.batches,
        )
        version, signature = self.vault.sign(statement_digest(statement))
        body = Checkpoint(
            statement=statement,
            key_name="ledger-checkpoint",
            key_version=version,
            signature=signature,
        )
        self.anchor.put(body)
        self.last_cp, self.checkpoints = statement, self.checkpoints + 1
        row = self._row(
            t + timedelta(milliseconds=5), None, "gateway", body.model_dump(mode="json")
        )
        self.last_cp_seq = self.seq
        self.batches = 0
        self.pending.append(row)
        signed = list(self._flush())  # the checkpoint: a batch of its own
        return signed[0]


class SyncSigner:
    """The gateway's Vault client, called synchronously (the generator is not async)."""

    def __init__(self, info: StackInfo) -> None:
        self.client = GatewayVaultClient(GatewaySettings.load(info.gateway_settings_path).vault)
        self.client._login()

    def sign(self, digest: bytes) -> tuple[int, str]:
        return self.client._sign(digest)


def generate(info: StackInfo, total: int) -> dict[str, Any]:
    signer = SyncSigner(info)
    assert info.anchor_dir
    gen = Generator(signer, DirectoryAnchor(info.anchor_dir), total)
    end = datetime.now(timezone.utc) - timedelta(hours=1)
    started = time.monotonic()
    columns = (
        "seq, time, kind, dag_id, task_id, run_id, try_number, map_index, connection, "
        "session_id, body, hash, batch_sig"
    )
    with psycopg.connect(info.admin_dsn(info.gateway_db)) as conn:
        with conn.transaction():
            # The gateway's own locks: its appends and its signer wait while we write.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LEDGER_LOCK_KEY,))
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHECKPOINT_LOCK_KEY,))
            # The stack's gateway wrote its key certificate (and maybe a checkpoint) at start.
            head = conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
            cp = conn.execute(
                "SELECT seq, body FROM ledger WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            last_cp = Checkpoint.model_validate(json.loads(cp[1])["body"]) if cp else None
            signed = conn.execute(
                "SELECT count(*) FROM ledger WHERE seq > %s AND batch_sig IS NOT NULL",
                (cp[0] if cp else 0,),
            ).fetchone()[0]
            gen.after(head, last_cp, cp[0] if cp else 0, signed)
            gen.total += gen.seq
            with conn.cursor().copy(f"COPY ledger ({columns}) FROM STDIN") as copy:
                for row in gen.rows(end):
                    copy.write_row(row)
        conn.execute("ANALYZE ledger")
    signer.client.close()
    return {
        "records": gen.seq,
        "checkpoints": gen.checkpoints,
        "first": (end - timedelta(days=DAYS)).isoformat(),
        "last": end.isoformat(),
        "seconds": time.monotonic() - started,
    }


def run_measured(cmd: list[str], gateway_pid: int | None) -> dict[str, Any]:
    with tempfile.TemporaryFile() as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS)
        elapsed = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read().decode(errors="replace")
    gateway_hwm = None
    if gateway_pid:
        for line in Path(f"/proc/{gateway_pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                gateway_hwm = int(line.split()[1]) / 1024
    return {
        "seconds": elapsed,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "load_average": os.getloadavg()[0],
        "exit": proc.returncode,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "gateway_peak_rss_mib": gateway_hwm,
        "tail": output.strip().splitlines()[-1][:300] if output.strip() else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("-n", type=int, default=3, help="runs of export and of verify")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hoop-month-"))
    machine = Machine.here()
    try:
        with stack.running_stack() as info:
            print(f"machine: {machine.describe()}")
            made = generate(info, args.records)
            print(
                f"generated {made['records']} records ({made['checkpoints']} checkpoints) "
                f"in {made['seconds']:.0f}s, {made['first']} .. {made['last']}"
            )
            since = (datetime.fromisoformat(made["first"]) - timedelta(minutes=1)).isoformat()
            until = datetime.now(timezone.utc).isoformat()
            exports, verifies = [], []
            for i in range(args.n):
                out = work / f"bundle-{i}"
                cmd = [*CLI, "audit", "export", "--stack", info.run_dir, "--since", since]
                exports.append(
                    run_measured([*cmd, "--until", until, "--out", str(out)], info.gateway_pid)
                )
                print("export", exports[-1])
                verify = [*CLI, "audit", "verify", "--bundle", str(out)]
                verifies.append(run_measured(verify, None))
                print("verify --bundle", verifies[-1])
                size = sum(p.stat().st_size for p in out.iterdir())
                if i:
                    shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
        secs = [r["seconds"] for r in runs]
        cpu = [r["cpu_seconds"] for r in runs]
        return {
            "n": len(runs),
            "median_s": statistics.median(secs),
            "p95_s": Stats.of(secs).p95,
            "median_cpu_s": statistics.median(cpu),
            "load_average_1min": [r["load_average"] for r in runs],
            "max_s": max(secs),
            "runs_s": secs,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "exit_codes": [r["exit"] for r in runs],
        }

    results = {
        "machine": machine.describe(),
        "generated": made,
        "bundle_bytes": size,
        "export": summary(exports),
        "verify_bundle": summary(verifies),
        "gateway_peak_rss_mib": exports[-1]["gateway_peak_rss_mib"],
    }
    print(json.dumps(results, indent=2))
    e, v = results["export"], results["verify_bundle"]
    print(
        f"export of the month: median {e['median_s']:.1f}s (goal <= 30), peak RSS {e['peak_rss_mib']:.0f} MiB"
    )
    print(
        f"verify --bundle: median {v['median_s']:.1f}s (goal <= 10), peak RSS {v['peak_rss_mib']:.0f} MiB"
    )
    if args.json:
        bench_report(machine, results).write(args.json)


def bench_report(machine: Machine, results: dict[str, Any]) -> BenchReport:
    """The results as the BenchReport docs/performance.md is rendered from."""
    made, e, v = results["generated"], results["export"], results["verify_bundle"]

    def row(what: str, r: dict[str, Any], limit: float) -> BenchRow:
        ok = set(r["exit_codes"]) == {0}
        return BenchRow(
            what=what,
            unit="s",
            n=r["n"],
            median=r["median_s"],
            p95=r["p95_s"],
            note=f"peak RSS {r['peak_rss_mib']:.0f} MiB; exit codes {r['exit_codes']}",
            goal=f"<= {limit:g} s (median), exit 0",
            met=ok and r["median_s"] <= limit,
        )

    rows = [
        row("audit export (a month)", e, 30),
        row("audit verify --bundle", v, 10),
        BenchRow(
            what="gateway peak RSS during the export",
            unit="MiB",
            value=results["gateway_peak_rss_mib"],
        ),
        BenchRow(what="bundle size", unit="MB", value=results["bundle_bytes"] / 1e6),
    ]
    return BenchReport(
        benchmark="export_month",
        issue="#5 [evidence]",
        command=command(),
        machine=machine,
        tables=[
            BenchTable(
                title=f"Export and verify of a month ({made['records']:,} records, "
                f"{made['checkpoints']:,} checkpoints)",
                rows=rows,
            )
        ],
        notes=["peak RSS is the command's own (wait4); memory must stay bounded"],
    )


if __name__ == "__main__":
    main()
