"""The reviewer's export bundle: what it holds, how it is written, how it is verified offline.

A bundle is a directory::

    manifest.json      what the bundle covers, how the key was obtained, SHA-256 of every file
    records.jsonl      the records, one canonical record per line, exactly as hashed
    checkpoints.jsonl  the signed checkpoints: the one before the records (it signs the hash
                       they start from), then every one among them
    batches.jsonl      the batch signatures: ``{"last_seq":N,"sig":"…"}`` for each batch
                       among the records (ledger/batch.py)
    keys.jsonl         the gateway key certificates (signed by Vault's checkpoint key)
    public-key.json    the checkpoint key's public halves, and how they were obtained
    report.html        the four questions, answered
    report.csv         one row per statement
    README.txt         how to verify

The records run contiguously from just after a signed checkpoint to the checkpoint that covers
the end of the window, so every record in the window is under a signature. Verifying needs
this directory and nothing else (no gateway, no Vault, no network).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from airflow_hoop.ledger.anchor import AnchorEntry
from airflow_hoop.ledger.bundle_checks import (
    ReportCheck,
    read_signature,
    signature_problem,
    trimmed,
)
from airflow_hoop.ledger.bundle_window import WindowCheck
from airflow_hoop.ledger.canonical import canonical
from airflow_hoop.ledger.checkpoint import PublicKeySet
from airflow_hoop.ledger.manifest import (
    MANIFEST,
    BundleError,
    BundleManifest,
    FileDigest,
    file_digest,
    read_manifest,
)
from airflow_hoop.ledger.manifest_sig import MANIFEST_SIG
from airflow_hoop.ledger.report import KINDS as REPORT_KINDS
from airflow_hoop.ledger.verification import Failure, FailureKind, Verification
from airflow_hoop.ledger.verify import BatchEnds, LedgerVerifier

RECORDS = "records.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
BATCHES = "batches.jsonl"
KEYS = "keys.jsonl"
PUBLIC_KEY = "public-key.json"
README = "README.txt"
#: Files checked before the records (a changed key or checkpoint file would otherwise show
#: up as a misleading signature failure), and after them.
_CHECKED_FIRST = (PUBLIC_KEY, CHECKPOINTS, BATCHES, KEYS)

_README = """\
airflow-hoop audit bundle
=========================

Verify it (offline; needs only Python and the airflow-hoop package, or any tool that
follows docs/reviewer-guide.md):

    airflow-hoop audit verify --bundle {dir} --public-key <key you obtained yourself>

Without --public-key the key in public-key.json is used: read manifest.json ("public_key")
to see how it was obtained, and prefer a copy of the key you fetched from Vault yourself.
"""


class BundleWriter:
    """Writes a bundle; ``records.jsonl`` is hashed as it is written (one pass)."""

    def __init__(self, out_dir: Path) -> None:
        if out_dir.exists() and any(out_dir.iterdir()):
            raise BundleError(
                f"the output directory {out_dir} is not empty", "name a new or empty directory"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self._records = open(out_dir / RECORDS, "wb", buffering=1 << 20)  # noqa: SIM115
        self._digest = hashlib.sha256()
        self._size = 0
        self.checkpoints: list[bytes] = []
        self.certificates: list[dict[str, Any]] = []
        self._batches = open(out_dir / BATCHES, "w", buffering=1 << 20)  # noqa: SIM115

    def write_record(self, data: bytes) -> None:
        line = data + b"\n"
        self._records.write(line)
        self._digest.update(line)
        self._size += len(line)

    def write_batch(self, last_seq: int, batch_sig: str) -> None:
        self._batches.write(f'{{"last_seq":{last_seq},"sig":{json.dumps(batch_sig)}}}\n')

    def add_checkpoint(self, body: dict[str, Any]) -> None:
        self.checkpoints.append(canonical(body))

    def finish(self, keys: PublicKeySet, manifest: dict[str, Any]) -> BundleManifest:
        """Close the records, write the other files and the manifest (last)."""
        self._records.close()
        self._batches.close()
        (self.out_dir / KEYS).write_bytes(b"".join(canonical(c) + b"\n" for c in self.certificates))
        files = {RECORDS: FileDigest(sha256=self._digest.hexdigest(), bytes=self._size)}
        (self.out_dir / CHECKPOINTS).write_bytes(b"".join(c + b"\n" for c in self.checkpoints))
        (self.out_dir / PUBLIC_KEY).write_text(keys.model_dump_json(indent=2) + "\n")
        (self.out_dir / README).write_text(_README.format(dir=self.out_dir))
        for path in sorted(self.out_dir.iterdir()):
            if path.name not in files and path.name != MANIFEST and path.is_file():
                files[path.name] = file_digest(path)
        result = BundleManifest(files=files, public_key=keys.source, **manifest)
        (self.out_dir / MANIFEST).write_text(result.model_dump_json(indent=2) + "\n")
        return result


def verify_bundle(
    bundle: Path,
    *,
    public_key: PublicKeySet | None = None,
    anchor: Iterator[AnchorEntry] | None = None,
    anchor_location: str | None = None,
) -> Verification:
    """Verify a bundle offline: files against the manifest, then the records' chain and the
    signatures (with ``public_key`` when given, else the bundle's own key file)."""
    manifest = read_manifest(bundle)
    problem = _unlisted(bundle, manifest) or _check_files(bundle, manifest, _CHECKED_FIRST)
    if problem is not None:
        return problem
    if manifest.report is None:
        message = "the manifest does not state what its report was rendered from"
        return _failed(Verification(ok=False), message, MANIFEST, FailureKind.REPORT_CHANGED)
    keys = public_key or _bundle_keys(bundle)
    checkpoints = _read_checkpoints(bundle)
    span = manifest.range
    start_body = None
    if span is not None and span.start_checkpoint is not None:
        start_body = checkpoints.get(span.start_checkpoint)
    verifier = LedgerVerifier(
        keys,
        start_seq=span.first_seq if span else 1,
        start_hash=span.start_hash if span else "00" * 32,
        prev_checkpoint=None if start_body is None else json.loads(start_body),
        anchor=anchor,
        anchor_location=anchor_location,
        complete=False,
        on_checkpoint=lambda _seq, body: _listed(body, checkpoints),
        certificates=_read_jsonl(bundle, KEYS),
    )
    if span is not None and span.start_checkpoint is not None and start_body is None:
        verifier.fail(
            FailureKind.CONTENT_CHANGED,
            span.first_seq,
            f"{CHECKPOINTS} lacks checkpoint {span.start_checkpoint}, which signs the start",
            file=CHECKPOINTS,
        )
    if span is not None and span.first_seq > 1 and span.start_checkpoint is None:
        verifier.fail(
            FailureKind.CONTENT_CHANGED,
            span.first_seq,
            f"the manifest names no checkpoint signing the hash seq {span.first_seq} starts from",
            file=MANIFEST,
        )
    window = WindowCheck(manifest.window, span)
    listed = manifest.files.get(RECORDS)
    report = ReportCheck(manifest.report, listed.bytes if listed else 0)
    try:
        digest, size, last = _feed_records(bundle, verifier, window, report)
    except BaseException:
        report.close()
        raise
    try:
        return _judge(bundle, manifest, verifier, window, report, (digest, size, last))
    finally:
        report.close()


def _judge(
    bundle: Path,
    manifest: BundleManifest,
    verifier: LedgerVerifier,
    window: WindowCheck,
    report: ReportCheck,
    read: tuple[str, int, int | None],
) -> Verification:
    """After the records: their end, count and digest, the window, then ``_proofs``."""
    digest, size, last = read
    span = manifest.range
    result = verifier.finish(expect_last_seq=span.last_seq if span else None)
    if result.failure is not None:
        return result
    if span is not None and last != span.last_seq:
        verifier.fail(
            FailureKind.CONTENT_CHANGED,
            span.last_seq + 1,
            f"{RECORDS} holds records after seq {span.last_seq}, the manifest's last",
            file=RECORDS,
        )
        return result
    if span is not None and result.records != span.records:
        verifier.fail(
            FailureKind.CONTENT_CHANGED,
            None,
            f"the manifest counts {span.records} records; {RECORDS} holds {result.records}",
            file=MANIFEST,
        )
        return result
    listed = manifest.files.get(RECORDS)
    if listed is None or listed != FileDigest(sha256=digest, bytes=size):
        verifier.fail(
            FailureKind.CONTENT_CHANGED,
            None,
            f"{RECORDS} does not match the manifest's digest",
            file=RECORDS,
        )
        return result
    # The records verified, so their times are the signed ones: the claimed window must fit.
    misfit = window.structure() or window.problem()
    if misfit is not None:
        verifier.fail(
            FailureKind.CONTENT_CHANGED,
            None,
            f"{misfit}: the manifest's window was changed after the export; export it again",
            file=MANIFEST,
        )
        return result
    proof = _proofs(bundle, manifest, verifier, report)
    if proof is not None:
        verifier.fail(*proof)
        return result
    if window.warning is not None:
        result.warnings.append(window.warning)
    rest = tuple(n for n in manifest.files if n not in (*_CHECKED_FIRST, RECORDS))
    return _check_files(bundle, manifest, rest) or result


def _proofs(
    bundle: Path,
    manifest: BundleManifest,
    verifier: LedgerVerifier,
    report: ReportCheck,
) -> tuple[FailureKind, None, str, str] | None:
    """Completeness against the anchor (first: a trimmed bundle is named as such even when
    its manifest was re-signed by nobody), the manifest's signature, the report's bytes."""
    span = manifest.range
    end = (span.last_seq, verifier.prev_hex) if span else (0, "00" * 32)
    window = manifest.window
    anchor = verifier.anchor_entries()
    cut = trimmed(
        verifier.last_checkpoint_number,
        end[0],
        window.until,
        window.last_seq,
        manifest.newest_checkpoint,
        anchor,
    )
    if cut is not None:
        return FailureKind.INCOMPLETE, None, cut, RECORDS
    signed = read_signature(bundle)
    problem = (
        signed
        if isinstance(signed, str)
        else signature_problem(bundle, signed, verifier.certified, *end)
    )
    if problem is not None:
        return FailureKind.SIGNATURE_INVALID, None, problem, MANIFEST_SIG
    name = report.differs(bundle, manifest.verification)
    if name is not None:
        message = f"{name} is not the report of the verified records (it was changed)"
        return FailureKind.REPORT_CHANGED, None, message, name
    return None


def _feed_records(
    bundle: Path, verifier: LedgerVerifier, window: WindowCheck, report: ReportCheck
) -> tuple[str, int, int | None]:
    digest, size, last = hashlib.sha256(), 0, None
    try:
        fh = open(bundle / RECORDS, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise BundleError(f"{bundle} has no {RECORDS}", "export the bundle again") from None
    except OSError as exc:  # a directory in its place, unreadable (found by the bundle fuzz)
        raise BundleError(
            f"{bundle / RECORDS} cannot be read ({type(exc).__name__})", "export the bundle again"
        ) from None
    ends = BatchEnds(_batch_sigs(bundle))
    with fh:
        for line in fh:
            digest.update(line)
            size += len(line)
            if verifier.failed:
                continue  # keep hashing: the digest is of the whole file
            verifier.feed(line.rstrip(b"\n"), batch=ends.at(verifier.expected))
            if verifier.last_kind in REPORT_KINDS:  # (None when the record did not verify)
                report.add(line.rstrip(b"\n"))
            if verifier.last_accepted is not None:
                last = verifier.last_accepted
                window.add(last, verifier.last_time)
    return digest.hexdigest(), size, last


def _unlisted(bundle: Path, manifest: BundleManifest) -> Verification | None:
    """Every byte of the bundle is covered: a file the manifest does not list (or a manifest
    that does not list the records) is refused rather than ignored, so nothing unverified
    can pass for part of the evidence."""
    if RECORDS not in manifest.files:
        return _failed(Verification(ok=False), f"{RECORDS} is not listed in the manifest", RECORDS)
    for path in sorted(bundle.iterdir()):
        if path.name not in (MANIFEST, MANIFEST_SIG) and path.name not in manifest.files:
            return _failed(
                Verification(ok=False),
                f"{path.name} is not part of the bundle (not listed in the manifest): "
                "remove it, or export the bundle again",
                path.name,
            )
    return None


def _check_files(
    bundle: Path, manifest: BundleManifest, names: tuple[str, ...]
) -> Verification | None:
    for name in names:
        expected = manifest.files.get(name)
        path = bundle / name
        if expected is None or not path.is_file() or file_digest(path) != expected:
            failure = Verification(ok=False)
            what = "is missing" if not path.is_file() else "does not match the manifest's digest"
            if expected is None:
                what = "is not listed in the manifest"
            return _failed(failure, f"{name} {what}", name)
    return None


def _failed(
    result: Verification,
    message: str,
    file: str,
    kind: FailureKind = FailureKind.CONTENT_CHANGED,
) -> Verification:
    result.ok = False
    result.failure = Failure(kind=kind, seq=None, message=message, file=file)
    return result


def _bundle_keys(bundle: Path) -> PublicKeySet:
    try:
        keys = PublicKeySet.model_validate_json((bundle / PUBLIC_KEY).read_bytes())
    except (OSError, ValidationError):
        raise BundleError(
            f"{bundle / PUBLIC_KEY} is not a public key set",
            "pass the key with --public-key",
        ) from None
    problem = keys.check()
    if problem:
        raise BundleError(f"{bundle / PUBLIC_KEY}: {problem}", "pass the key with --public-key")
    return keys


def _read_checkpoints(bundle: Path) -> dict[int, bytes]:
    """Checkpoint number -> its canonical bytes, from checkpoints.jsonl."""
    found: dict[int, bytes] = {}
    with open(bundle / CHECKPOINTS, "rb") as fh:
        for line in fh:
            data = line.rstrip(b"\n")
            try:
                number = int(json.loads(data)["statement"]["number"])
            except (ValueError, KeyError, TypeError):
                continue  # a malformed line matches no checkpoint: reported where it is used
            found[number] = data
    return found


def _read_jsonl(bundle: Path, name: str) -> list[dict[str, Any]]:
    """A small JSON Lines file of the bundle (its digest was checked first)."""
    try:
        lines = (bundle / name).read_bytes().splitlines()
        items = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        raise BundleError(f"{bundle / name} is not JSON Lines", "export the bundle again") from None
    if not all(isinstance(i, dict) for i in items):
        raise BundleError(f"{bundle / name} holds a line that is not an object")
    return items


def _batch_sigs(bundle: Path) -> Iterator[tuple[int, str]]:
    """``batches.jsonl`` streamed: (last seq, batch signature), in the file's order."""
    with open(bundle / BATCHES, "rb") as fh:
        for line in fh:
            try:
                item = json.loads(line)
                yield int(item["last_seq"]), str(item["sig"])
            except (ValueError, KeyError, TypeError):
                raise BundleError(
                    f"{bundle / BATCHES} holds a line that is not a batch signature",
                    "export the bundle again",
                ) from None


def _listed(body: dict[str, Any], checkpoints: dict[int, bytes]) -> str | None:
    number = int(body["statement"]["number"])
    if checkpoints.get(number) != canonical(body):
        return f"checkpoint {number} differs from the copy in {CHECKPOINTS}"
    return None
