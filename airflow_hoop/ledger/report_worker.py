"""The export's report, built in a second process while the first streams and verifies.

On two cores the report (decoding every record, the CSV) and the verification (hashing,
signatures, writing the bundle) each take about half of the export's time: in parallel the
month's export takes about half as long. The verifying process sends only the records that
verified, in batches of raw lines; the worker decodes them and feeds ``ReportBuilder``.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from pathlib import Path

import msgspec

from airflow_hoop.ledger.report import ReportBuilder, ReportScope
from airflow_hoop.ledger.verification import Verification

#: Lines sent per message (large enough to make the pipe cheap, small enough to overlap).
BATCH = 2000


class ReportWorker:
    """``add`` raw lines of verified records; ``finish`` writes report.html and report.csv."""

    def __init__(self, out_dir: Path, scope: ReportScope) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_run, args=(child, str(out_dir), scope.model_dump_json()), daemon=True
        )
        self._proc.start()
        child.close()
        self._lines: list[bytes] = []

    def add(self, line: bytes) -> None:
        self._lines.append(line)
        if len(self._lines) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._lines:
            self._conn.send_bytes(b"\n".join(self._lines))
            self._lines = []

    def finish(self, verification: Verification, facts: dict[str, str]) -> None:
        self._flush()
        self._conn.send_bytes(b"")
        self._conn.send((verification.model_dump_json(), facts))
        error = self._conn.recv()
        self._proc.join(30)
        if error:
            raise RuntimeError(f"the report could not be written: {error}")

    def close(self) -> None:
        """Stop the worker (after finish, or when the export fails)."""
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()


def _run(conn: Connection, out_dir: str, scope_json: str) -> None:
    error = ""
    report = None
    try:
        report = ReportBuilder(Path(out_dir), ReportScope.model_validate_json(scope_json))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    decode = msgspec.json.Decoder().decode
    while batch := conn.recv_bytes():  # always drained: the parent must never block
        if error or report is None:
            continue
        try:
            for line in batch.split(b"\n"):
                report.add(decode(line))
        except Exception as exc:  # reported to the parent, which fails the export
            error = f"{type(exc).__name__}: {exc}"
    verification_json, facts = conn.recv()
    if not error and report is not None:
        try:
            report.finish(Verification.model_validate_json(verification_json), facts)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    conn.send(error)
    conn.close()
