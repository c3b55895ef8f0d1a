"""``audit verify`` (live) and ``audit export``: read the ledger from a gateway and check it.

The gateway is only a reader here: every record is checked against the chain, the checkpoint
signatures (with a public key the reviewer may pin) and, when given, the anchor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

import airflow_hoop
from airflow_hoop.client.audit import AuditClient
from airflow_hoop.errors import ConfigError
from airflow_hoop.ledger.anchor import DirectoryAnchor
from airflow_hoop.ledger.bundle import BundleWriter
from airflow_hoop.ledger.chain import GENESIS_HASH
from airflow_hoop.ledger.checkpoint import KeySource, PublicKeySet
from airflow_hoop.ledger.manifest import (
    MANIFEST,
    BundleManifest,
    BundleRange,
    BundleWindow,
    NewestCheckpoint,
    ReportInputs,
    file_digest,
)
from airflow_hoop.ledger.manifest_sig import MANIFEST_SIG, ManifestSignRequest
from airflow_hoop.ledger.report import KINDS as REPORT_KINDS
from airflow_hoop.ledger.report import ReportScope
from airflow_hoop.ledger.report_worker import ReportWorker
from airflow_hoop.ledger.verify import FailureKind, LedgerVerifier, Verification

Progress = Callable[[int], None]


def load_public_key(path: Path) -> PublicKeySet:
    """A pinned key: a bundle's ``public-key.json``, or Vault's own answer to
    ``bao read -format=json transit/keys/<key>`` (what a reviewer fetches independently)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the public key file {path} ({exc})") from None
    try:
        if isinstance(data, dict) and "data" in data:  # Vault's key read
            inner = data["data"]
            keys = {int(v): str(k["public_key"]) for v, k in inner["keys"].items()}
            result = PublicKeySet(
                key_name=str(inner["name"]),
                keys=keys,
                source=KeySource(how=f"Vault transit key read, from the file {path}"),
            )
        else:
            result = PublicKeySet.model_validate(data)
            result.source = KeySource(how=f"pinned from the file {path}")
    except (KeyError, TypeError, ValueError, ValidationError):
        raise ConfigError(
            f"{path} is neither a public-key.json nor Vault's transit key JSON",
            "write it with: bao read -format=json transit/keys/ledger-checkpoint > key.json",
        ) from None
    problem = result.check()
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return result


def verify_live(
    client: AuditClient,
    keys: PublicKeySet,
    *,
    anchor_dir: Path | None = None,
    progress: Progress | None = None,
) -> Verification:
    """Verify the whole ledger as the gateway serves it (chain, signatures, anchor, tail)."""
    anchor = DirectoryAnchor(anchor_dir) if anchor_dir else None
    verifier = LedgerVerifier(
        keys,
        anchor=anchor.entries() if anchor else None,
        anchor_location=anchor.location if anchor else None,
    )
    _feed_stream(client, verifier, 0, None, progress)
    return verifier.finish()


def _feed_stream(
    client: AuditClient,
    verifier: LedgerVerifier,
    after_seq: int,
    through_seq: int | None,
    progress: Progress | None,
    each: Callable[[int, bytes, str | None], None] | None = None,
) -> None:
    """Feed the stream to the verifier; ``each`` sees every record, after the verifier.
    Without ``each`` reading stops at the first failure."""
    try:
        for record in client.stream(after_seq, through_seq):
            failed = verifier.feed(record.data, record.hash, record.seq, record.batch) is not None
            if each is not None:
                each(record.seq, record.data, record.batch)
            elif failed:
                return
            if progress is not None:
                progress(1)
    except ValueError:
        # A stored body that breaks the stream's framing (e.g. a raw newline written by hand).
        verifier.fail(FailureKind.UNREADABLE, verifier.expected, "a stored record is not JSON")


def export_bundle(
    client: AuditClient,
    out_dir: Path,
    since: datetime,
    until: datetime,
    *,
    keys: PublicKeySet,
    dag_id: str | None = None,
    connection: str | None = None,
    anchor_dir: Path | None = None,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
) -> BundleManifest:
    """Write the reviewer's bundle for ``since <= time < until`` (see ledger/bundle.py)."""
    window = client.window(since, until)
    start_seq, start_hash, start_body = 1, GENESIS_HASH, None
    end_seq: int | None = None
    if window.first_seq is not None:
        start_seq, start_hash, start_body = client.signed_start(window.first_seq)
        assert window.last_seq is not None
        end_seq = client.covering_checkpoint(window.last_seq)
    elif window.head_seq is not None:  # an empty window: nothing to export
        start_seq = (window.head_seq or 0) + 1
        end_seq = window.head_seq
    newest = _newest_checkpoint(client)
    writer = BundleWriter(out_dir)
    certificates = client.certificates()
    writer.certificates = certificates
    anchor = DirectoryAnchor(anchor_dir) if anchor_dir else None
    verifier = LedgerVerifier(
        keys,
        start_seq=start_seq,
        start_hash=start_hash,
        prev_checkpoint=start_body,
        anchor=anchor.entries() if anchor else None,
        anchor_location=anchor.location if anchor else None,
        complete=False,
        on_checkpoint=lambda _seq, body: (
            None if body == start_body else writer.add_checkpoint(body)
        ),
        certificates=certificates,
    )
    if start_body is not None:
        writer.add_checkpoint(start_body)
    scope = ReportScope(
        first_seq=window.first_seq,
        last_seq=window.last_seq,
        dag_id=dag_id,
        connection=connection,
        title=f"airflow-hoop audit report, {since.isoformat()} to {until.isoformat()}",
    )
    report = ReportWorker(out_dir, scope)
    if on_total is not None:
        head = end_seq if end_seq is not None else window.head_seq or 0
        on_total(max(head - start_seq + 1, 0))

    written = [0, start_seq - 1]  # records, last seq

    def each(seq: int, data: bytes, batch: str | None) -> None:
        # Every record goes into the bundle (a tampered one too: the reviewer sees it); the
        # report reads only records that verified.
        writer.write_record(data)
        if batch is not None:
            writer.write_batch(seq, batch)
        written[0], written[1] = written[0] + 1, seq
        if verifier.last_kind in REPORT_KINDS:  # (None when the record did not verify)
            report.add(data)

    try:
        if window.first_seq is not None:
            _feed_stream(client, verifier, start_seq - 1, end_seq, progress, each)
    except BaseException:
        report.close()
        raise
    result = verifier.finish()
    if end_seq is None and window.first_seq is not None:
        result.warnings.append(
            "the end of the window is not under a checkpoint yet: export again after the "
            "gateway's next checkpoint to have every record signed"
        )
    count, last = written
    facts = {
        "window": f"{since.isoformat()} to {until.isoformat()}",
        "records in the window": f"{window.records} (seq {window.first_seq}..{window.last_seq})",
        "records in the bundle": f"{count} (seq {start_seq}..{last})",
        "filters": f"dag={dag_id or '*'} connection={connection or '*'}",
        "source": client.base_url,
        "public key": keys.source.how,
        "anchor": anchor.location if anchor else "not compared",
    }
    try:
        report.finish(result, facts)
    finally:
        report.close()
    span = None
    if count:
        span = BundleRange(
            first_seq=start_seq,
            last_seq=last,
            records=count,
            start_hash=start_hash,
            start_checkpoint=None if start_body is None else start_body["statement"]["number"],
        )
    manifest = writer.finish(
        keys,
        {
            "created_at": datetime.now(timezone.utc),
            "generator": f"airflow-hoop {airflow_hoop.__version__}",
            "source": client.base_url,
            "window": BundleWindow(
                since=since,
                until=until,
                first_seq=window.first_seq,
                last_seq=window.last_seq,
                records=window.records,
                dag_id=dag_id,
                connection=connection,
            ),
            "range": span,
            "anchor": anchor.location if anchor else None,
            "verification": result,
            "report": ReportInputs(scope=scope, facts=facts),
            "newest_checkpoint": newest,
        },
    )
    if result.ok:
        # The gateway vouches for this manifest of its ledger; a bundle that did not verify
        # stays unsigned (its verification fails anyway, and says where).
        request = ManifestSignRequest(
            manifest_sha256=file_digest(out_dir / MANIFEST).sha256,
            last_seq=last if count else 0,
            end_hash=verifier.prev_hex if count else GENESIS_HASH,
        )
        signed = client.sign_manifest(request)
        # One line, no insignificant byte: any change to it changes what it says.
        (out_dir / MANIFEST_SIG).write_text(signed.model_dump_json() + "\n")
    return manifest


def _newest_checkpoint(client: AuditClient) -> NewestCheckpoint | None:
    page = client.checkpoints(newest_first=True, limit=1)
    if not page.checkpoints:
        return None
    statement = json.loads(page.checkpoints[0].body)["body"]["statement"]
    return NewestCheckpoint(
        number=statement["number"], last_seq=statement["last_seq"], time=statement["time"]
    )
