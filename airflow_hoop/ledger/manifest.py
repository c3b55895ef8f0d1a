"""The bundle's manifest: what a bundle covers and the digest of every file it holds.

Kept apart from ``bundle.py`` (writing and verifying) so that the window check
(``bundle_window.py``) and the export read the models without the verifier.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airflow_hoop.errors import LedgerError
from airflow_hoop.ledger.checkpoint import KeySource
from airflow_hoop.ledger.report import ReportScope
from airflow_hoop.ledger.verification import Verification

FORMAT = "airflow-hoop-bundle/1"
MANIFEST = "manifest.json"


class BundleError(LedgerError):
    """The bundle cannot be read at all (missing or malformed manifest, missing file)."""


class FileDigest(BaseModel):
    # Verify relies on these fields: a misspelt one must not fall back to a default.
    model_config = ConfigDict(extra="forbid")

    sha256: str
    bytes: int


class BundleRange(BaseModel):
    """The contiguous records in the bundle and the signed hash they start from."""

    # Verify relies on these fields: a misspelt ``start_checkpoint`` would otherwise read as
    # "starts at genesis" and skip the start signature (found by tests/unit/test_fuzz_bundle.py).
    model_config = ConfigDict(extra="forbid")

    first_seq: int
    last_seq: int
    records: int
    start_hash: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="hash of record first_seq - 1 (zeros at genesis)"
    )
    start_checkpoint: int | None = Field(
        None, description="number of the checkpoint that signs start_hash (None at genesis)"
    )


class BundleWindow(BaseModel):
    """The time window asked for, and where it lies in the records."""

    since: datetime
    until: datetime
    first_seq: int | None = None
    last_seq: int | None = None
    records: int = 0
    dag_id: str | None = None
    connection: str | None = None


class ReportInputs(BaseModel):
    """What the report was rendered from, besides the records and the verification: the
    verifier renders it again from these and compares (``bundle_checks.py``)."""

    scope: ReportScope
    facts: dict[str, str]


class NewestCheckpoint(BaseModel):
    """The newest checkpoint of the ledger when the bundle was exported."""

    number: int
    last_seq: int
    time: datetime


class BundleManifest(BaseModel):
    format: Literal["airflow-hoop-bundle/1"] = "airflow-hoop-bundle/1"
    created_at: datetime
    generator: str
    source: str = Field(description="where the records were read (the gateway URL)")
    window: BundleWindow
    range: BundleRange | None = None
    public_key: KeySource
    anchor: str | None = Field(None, description="anchor compared during the export, if any")
    verification: Verification
    files: dict[str, FileDigest]
    report: ReportInputs | None = None
    newest_checkpoint: NewestCheckpoint | None = None


def file_digest(path: Path) -> FileDigest:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return FileDigest(sha256=digest.hexdigest(), bytes=size)


def read_manifest(bundle: Path) -> BundleManifest:
    try:
        return BundleManifest.model_validate_json((bundle / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BundleError(
            f"{bundle} has no {MANIFEST}", "point --bundle at the directory audit export wrote"
        ) from None
    except OSError as exc:  # a directory in its place, unreadable (found by the bundle fuzz)
        raise BundleError(
            f"{bundle / MANIFEST} cannot be read ({type(exc).__name__})", "export the bundle again"
        ) from None
    except ValidationError as exc:
        raise BundleError(
            f"{bundle / MANIFEST} is not a bundle manifest ({exc.error_count()} problems)",
            "export the bundle again",
        ) from None
