"""The stream's durable cursor: the seq and hash of the last record a sink acknowledged.

Written atomically after each delivered batch (a temporary file in the same directory,
fsync, rename), so a crash leaves either the old cursor or the new one, never a torn file. On start the stream resumes after ``seq`` and checks that the next
record links to ``hash``: a ledger rewritten behind the cursor is detected, not streamed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airflow_hoop.errors import ConfigError
from airflow_hoop.ledger.chain import GENESIS_HASH


class Cursor(BaseModel):
    """Where the stream stands: ``seq`` 0 and the genesis hash before the first record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = 1
    seq: int = Field(0, ge=0)
    hash: str = Field(GENESIS_HASH, pattern=r"^[0-9a-f]{64}$")
    #: when the sink acknowledged it (for an operator reading the file; never compared)
    delivered_at: datetime | None = None


class CursorFile:
    """A cursor kept in one small JSON file; ``load`` of a missing file is the start."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    def try_lock(self) -> bool:
        """Hold ``<cursor>.lock`` (flock) for this process; False when another stream holds
        it: two streams on one cursor would each deliver every record."""
        if self._lock_fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    def load(self) -> Cursor:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return Cursor()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the stream cursor {self.path} ({exc.strerror})",
                "check the file's permissions, or give another --cursor",
            ) from None
        try:
            return Cursor.model_validate_json(text)
        except ValidationError:
            raise ConfigError(
                f"the stream cursor {self.path} is not a cursor file",
                "restore it from a backup, or move it away to stream from the first record "
                "(the SIEM then receives everything again)",
            ) from None

    def save(self, seq: int, hash_: str) -> Cursor:
        cursor = Cursor(seq=seq, hash=hash_, delivered_at=datetime.now(timezone.utc))
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(cursor.model_dump_json())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # No fsync of the directory: a power loss may undo the rename, which leaves the
        # previous cursor (never a torn one) and so repeats a delivered batch; nothing is lost.
        return cursor
