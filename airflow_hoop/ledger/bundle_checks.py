"""What a bundle must prove beyond its chain: a signed manifest, its own report, no trim.

- ``manifest.sig``: a certified gateway key signed this manifest for records ending on the
  hash the verifier computed (``manifest_sig.py``). A manifest without it is refused.
- The report: the verifier renders ``report.html`` and ``report.csv`` from the records that
  verified, with the scope and facts the (signed) manifest states, and compares them byte for
  byte with the bundle's; the first that differs is named.
- Completeness: the manifest states the newest checkpoint at export time; with an anchor,
  any checkpoint it holds after the bundle's last one that covers the window (signed before
  the window's end, or starting at or before its last record) means the bundle was cut back.
"""

from __future__ import annotations

import filecmp
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import msgspec
from pydantic import ValidationError

from airflow_hoop.ledger.anchor import AnchorEntry
from airflow_hoop.ledger.batch import CertifiedKeys
from airflow_hoop.ledger.manifest import NewestCheckpoint, ReportInputs
from airflow_hoop.ledger.manifest_sig import MANIFEST_SIG, SignedManifest, manifest_problem
from airflow_hoop.ledger.report import ReportBuilder
from airflow_hoop.ledger.report_worker import ReportWorker
from airflow_hoop.ledger.verification import Verification

REPORT_FILES = ("report.html", "report.csv")


def read_signature(bundle: Path) -> SignedManifest | str:
    """``manifest.sig``, or what is wrong with it."""
    path = bundle / MANIFEST_SIG
    if not path.is_file():
        return f"the manifest carries no signature ({MANIFEST_SIG} is missing)"
    try:
        return SignedManifest.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return f"{MANIFEST_SIG} is not a manifest signature"


def signature_problem(
    bundle: Path,
    signed: SignedManifest,
    keys: CertifiedKeys,
    last_seq: int | None,
    end_hash: str | None,
) -> str | None:
    manifest = (bundle / "manifest.json").read_bytes()
    return manifest_problem(signed, manifest, keys, last_seq, end_hash)


#: Records files larger than this render the report in a second process (as the export
#: does: on two cores it halves the time); smaller ones in this one (no process start).
WORKER_FROM_BYTES = 8 << 20


class ReportCheck:
    """Renders the report from the verified records into a scratch directory; ``differs``
    names the bundle's file that is not that rendering."""

    def __init__(self, inputs: ReportInputs, records_bytes: int) -> None:
        self.inputs = inputs
        self._tmp = tempfile.TemporaryDirectory(prefix="hoop-report-check-")
        out = Path(self._tmp.name)
        self._worker: ReportWorker | None = None
        self._builder: ReportBuilder | None = None
        self._broken = False
        self._decode = msgspec.json.Decoder().decode
        if records_bytes >= WORKER_FROM_BYTES:
            self._worker = ReportWorker(out, inputs.scope)
        else:
            self._builder = ReportBuilder(out, inputs.scope)

    def add(self, line: bytes) -> None:
        """A record the verifier accepted so far (one whose link the next record decides may
        still fail: then the verification fails, and the report is never compared)."""
        if self._worker is not None:
            self._worker.add(line)
            return
        if self._builder is None or self._broken:
            return
        try:
            self._builder.add(self._decode(line))
        except (KeyError, TypeError, ValueError, AttributeError, msgspec.DecodeError):
            self._broken = True

    def differs(self, bundle: Path, verification: Verification) -> str | None:
        try:
            if self._broken:
                return REPORT_FILES[0]
            if self._worker is not None:
                try:
                    self._worker.finish(verification, self.inputs.facts)
                except RuntimeError:  # a record the report could not read
                    return REPORT_FILES[0]
            elif self._builder is not None:
                self._builder.finish(verification, self.inputs.facts)
            for name in REPORT_FILES:
                mine = Path(self._tmp.name) / name
                theirs = bundle / name
                if not theirs.is_file() or not filecmp.cmp(mine, theirs, shallow=False):
                    return name
            return None
        finally:
            self.close()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
        self._tmp.cleanup()


def trimmed(
    last_number: int | None,
    bundle_last_seq: int,
    window_until: datetime,
    window_last_seq: int | None,
    newest: NewestCheckpoint | None,
    anchor: Iterable[AnchorEntry] | None,
) -> str | None:
    """The issue's words when a checkpoint after the bundle's last one covers the window: it
    starts at or before the window's last record, or it was signed before the window ended
    and covers records the bundle does not hold. None otherwise."""
    ends = last_number or 0
    for number, time, first_seq, last_seq in _later(ends, newest, anchor):
        inside = window_last_seq is not None and first_seq <= window_last_seq
        if inside or (time < window_until and last_seq > bundle_last_seq):
            return (
                f"bundle ends at checkpoint {ends} but the anchor holds checkpoint {number} "
                "covering this window"
            )
    return None


def _later(
    ends: int, newest: NewestCheckpoint | None, anchor: Iterable[AnchorEntry] | None
) -> Iterable[tuple[int, datetime, int, int]]:
    """(number, time, first_seq, last_seq) of the checkpoints after number ``ends``: the
    manifest's newest (its first_seq unknown: taken as after the window) and the anchor's."""
    if newest is not None and newest.number > ends:
        yield newest.number, newest.time, newest.last_seq + 1, newest.last_seq
    for entry in anchor or ():
        if entry.number > ends:
            checkpoint = entry.checkpoint()
            if checkpoint is not None:
                st = checkpoint.statement
                yield st.number, st.time, st.first_seq, st.last_seq
