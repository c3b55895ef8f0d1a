"""Where the stream delivers: stdout, a rotating file, an HTTP endpoint or syslog.

Each sink is a settings model with one ``deliver(lines)``: it returns only once the batch is
handed over (written and fsynced, acknowledged with a 2xx, sent on the socket), and raises
SinkError otherwise; the stream's cursor moves only after it returns.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from airflow_hoop.errors import SinkError
from airflow_hoop.stream.http_sink import HttpSink
from airflow_hoop.stream.syslog_sink import SyslogSink


class StdoutSink(BaseModel):
    """One line per record on standard output (a pipe into a log shipper)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["stdout"] = "stdout"

    def deliver(self, lines: list[bytes]) -> None:
        try:
            sys.stdout.buffer.write(b"\n".join(lines) + b"\n")
            sys.stdout.buffer.flush()
        except OSError as exc:  # a closed pipe: nothing was acknowledged
            raise SinkError(f"standard output refused the batch ({exc.strerror})") from None

    def close(self) -> None:
        """Nothing to release."""


class FileSink(BaseModel):
    """JSON Lines in a file, rotated by size: ``path``, ``path.1`` ... ``path.<keep>``.

    Every batch is fsynced before the cursor moves, so a power loss cannot lose a batch the
    cursor says was delivered.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["file"] = "file"
    path: Path
    max_bytes: int = Field(100 * 2**20, ge=1024, description="rotate before it exceeds this")
    keep: int = Field(5, ge=0, le=1000, description="rotated files kept (0: none)")
    fsync: bool = True

    _fh: IO[bytes] | None = PrivateAttr(default=None)
    _size: int = PrivateAttr(default=0)

    def deliver(self, lines: list[bytes]) -> None:
        data = b"\n".join(lines) + b"\n"
        try:
            fh = self._open()
            if self._size and self._size + len(data) > self.max_bytes:
                fh = self._rotate()
            fh.write(data)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
            self._size += len(data)
        except OSError as exc:
            self.close()
            raise SinkError(
                f"cannot write the stream file {self.path} ({exc.strerror})",
                "check the directory's space and permissions; the batch is written again",
            ) from None

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 (kept open across batches)
            self._size = self._fh.tell()
        return self._fh

    def _rotate(self) -> IO[bytes]:
        self.close()
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for n in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        return self._open()

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()


Sink = Annotated[StdoutSink | FileSink | HttpSink | SyslogSink, Field(discriminator="kind")]
