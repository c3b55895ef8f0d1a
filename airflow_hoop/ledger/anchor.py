"""Anchor sinks: an append-only copy of every checkpoint, outside the gateway database.

A database administrator can delete the tail of the ledger, checkpoint records included; the
anchor still holds the checkpoints, so the deletion shows. The interface is one small class;
the embedded stack uses a directory.

Production: object storage with a retention lock. The S3 sink (not shipped; the interface is
all it needs) writes each checkpoint as ``<prefix>/checkpoint-<number:012d>.json`` with
``PutObject`` and the header ``If-None-Match: *`` (never overwrite), into a bucket created with
Object Lock enabled and a default retention in COMPLIANCE mode (nobody, root included, can
delete or shorten it). The gateway's cloud identity gets ``s3:PutObject`` and ``s3:GetObject``
only; reviewers get ``s3:GetObject`` and ``s3:ListBucket``. ``entries`` lists the prefix in key
order. See docs/reviewer-guide.md.
"""

from __future__ import annotations

import contextlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from airflow_hoop.errors import LedgerError
from airflow_hoop.ledger.canonical import canonical
from airflow_hoop.ledger.records import Checkpoint

_NAME = re.compile(r"^checkpoint-(\d{12})\.json$")


class AnchorConflictError(LedgerError):
    """The anchor already holds a different checkpoint under the same number."""


class AnchorEntry:
    """One checkpoint as the anchor holds it: its number and its exact bytes."""

    __slots__ = ("data", "name", "number")

    def __init__(self, number: int, name: str, data: bytes) -> None:
        self.number = number
        self.name = name
        self.data = data

    def checkpoint(self) -> Checkpoint | None:
        """The parsed checkpoint, or None when the bytes are not one."""
        try:
            return Checkpoint.model_validate_json(self.data)
        except ValidationError:
            return None


def anchor_bytes(checkpoint: Checkpoint) -> bytes:
    """What a sink stores: the checkpoint body's canonical JSON (as in the ledger record)."""
    return canonical(checkpoint.model_dump(mode="json"))


class AnchorSink(ABC):
    """Append-only store of checkpoints. ``put`` never overwrites; ``entries`` reads back."""

    #: Human-readable location, for messages and the bundle manifest.
    location: str

    @abstractmethod
    def put(self, checkpoint: Checkpoint) -> None:
        """Store a checkpoint. Idempotent for identical bytes; a different checkpoint under an
        existing number raises AnchorConflictError."""

    @abstractmethod
    def entries(self) -> Iterator[AnchorEntry]:
        """Every stored checkpoint, in number order."""

    @abstractmethod
    def last_number(self) -> int:
        """The highest stored checkpoint number (0 when empty)."""

    @abstractmethod
    def get(self, number: int) -> AnchorEntry | None:
        """The stored checkpoint ``number``, if any."""


class DirectoryAnchor(AnchorSink):
    """A local directory: one read-only file per checkpoint, created exclusively.

    Append-only by construction (a file is linked into place only if the name is free), but a
    local administrator can still delete files: that is why production uses object lock.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = str(self.path)

    def _file(self, number: int) -> Path:
        return self.path / f"checkpoint-{number:012d}.json"

    def put(self, checkpoint: Checkpoint) -> None:
        number = checkpoint.statement.number
        data = anchor_bytes(checkpoint)
        self.path.mkdir(parents=True, exist_ok=True)
        final = self._file(number)
        tmp = self.path / f".tmp-{number}-{os.getpid()}-{id(data)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                # link() fails if the name exists: the write is exclusive and atomic.
                os.link(tmp, final)
            except FileExistsError:
                if final.read_bytes() != data:
                    raise AnchorConflictError(
                        f"the anchor {self.location} already holds a different checkpoint {number}",
                        "investigate: either the ledger or the anchor was tampered with",
                    ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(self.path)

    def entries(self) -> Iterator[AnchorEntry]:
        if not self.path.is_dir():
            return
        names = sorted(n for n in os.listdir(self.path) if _NAME.match(n))
        for name in names:
            match = _NAME.match(name)
            assert match is not None
            yield AnchorEntry(int(match.group(1)), name, (self.path / name).read_bytes())

    def get(self, number: int) -> AnchorEntry | None:
        path = self._file(number)
        try:
            return AnchorEntry(number, path.name, path.read_bytes())
        except FileNotFoundError:
            return None

    def last_number(self) -> int:
        if not self.path.is_dir():
            return 0
        numbers = [int(m.group(1)) for n in os.listdir(self.path) if (m := _NAME.match(n))]
        return max(numbers, default=0)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
