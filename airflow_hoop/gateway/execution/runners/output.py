"""The output of one shell command as it arrives: decoded, masked, capped, readable while it runs.

Order matters: bytes are hashed as they come (the ledger's ``raw_output_sha256``), decoded
with the request's encoding (undecodable bytes become ``\\xNN`` as BashOperator shows them),
NUL becomes ``\\x00`` (the session row is Postgres ``text``), secret values are replaced,
and only then is the text capped (hoop's ``truncated``). Bytes past the cap are still read,
hashed and counted, so the command never blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import bisect
import codecs
import contextlib
import hashlib
from collections.abc import Iterable
from typing import Protocol

MASK = "***"
#: Raw bytes kept from the end of the output, to find its last line after truncation.
TAIL_BYTES = 65_536


class Masker:
    """Replaces secret values in a text stream, also when one is split across chunks."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first: a secret that contains another is masked whole.
        self._values = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._pending = ""
        self.count = 0

    def mask(self, text: str, *, count: bool = True) -> str:
        """Mask a complete text (str.replace: far faster than a regex on large output)."""
        for value in self._values:
            found = text.count(value)
            if found:
                text = text.replace(value, MASK)
                if count:
                    self.count += found
        return text

    def feed(self, text: str) -> str:
        """The part of the stream that is safe to show now."""
        if not self._values:
            return text
        buf = self.mask(self._pending + text)
        # A secret cut by a chunk boundary: hold back only an end that could begin one, so
        # that ordinary output is never delayed.
        held = self._held(buf)
        self._pending = buf[len(buf) - held :] if held else ""
        return buf[: len(buf) - held]

    def _held(self, buf: str) -> int:
        """Length of the longest end of ``buf`` that is the beginning of a secret."""
        held = 0
        for value in self._values:
            pos = buf.find(value[0], max(len(buf) - len(value) + 1, 0))
            while pos != -1:
                if value.startswith(buf[pos:]):
                    held = max(held, len(buf) - pos)
                    break
                pos = buf.find(value[0], pos + 1)
        return held

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return rest


class TextStream(Protocol):
    """A streaming text transformer: a masking policy's detectors (masking/stream.py)."""

    def feed(self, text: str) -> str: ...

    def flush(self) -> str: ...

    def peek(self, text: str) -> str: ...


class OutputCapture:
    """One command's output. Feed it bytes; read the text so far (also while it runs)."""

    def __init__(self, *, encoding: str, max_bytes: int, secrets: Iterable[str] = ()) -> None:
        self.encoding = encoding
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="backslashreplace")
        # Only UTF-8 never yields lone surrogates, which Postgres text and JSON cannot hold.
        self._sanitize = codecs.lookup(encoding).name != "utf-8"
        self._masker = Masker(secrets)
        # The connection's masking policy (detectors), after the secret values: see add_masker.
        self._detectors: TextStream | None = None
        self._max = max_bytes
        self._stored_bytes = 0
        self._chunks: list[str] = []
        self._starts: list[int] = []
        self._length = 0
        self._raw = hashlib.sha256()
        self._tail = bytearray()
        self._changed = asyncio.Event()
        self.output_bytes = 0
        self.truncated = False
        self.finished = False

    # -- writing (the runner) -----------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.output_bytes += len(data)
        self._raw.update(data)
        self._tail += data
        if len(self._tail) > 2 * TAIL_BYTES:
            del self._tail[:-TAIL_BYTES]
        if not self.truncated:
            text = self._masker.feed(self._clean(self._decoder.decode(data)))
            self._append(self._detectors.feed(text) if self._detectors else text)
        self._notify()

    def finish(self) -> None:
        if not self.truncated:
            rest = self._masker.feed(self._clean(self._decoder.decode(b"", final=True)))
            rest += self._masker.flush()
            if self._detectors:
                rest = self._detectors.feed(rest) + self._detectors.flush()
            self._append(rest)
        self.finished = True
        self._notify()

    def note(self, text: str) -> None:
        """A gateway line after the command's output (e.g. why it was stopped); never capped."""
        self._store(text)
        self._notify()

    def add_masker(self, detectors: TextStream) -> None:
        """Also mask what a masking policy's detectors find (masking/stream.py)."""
        self._detectors = detectors

    # -- reading (the API) --------------------------------------------------------------------
    @property
    def length(self) -> int:
        """Characters of text so far (offsets of ``text_since`` count characters)."""
        return self._length

    @property
    def masked(self) -> int:
        return self._masker.count

    @property
    def raw_sha256(self) -> str:
        return self._raw.hexdigest()

    def text(self) -> str:
        return "".join(self._chunks)

    def text_since(self, offset: int, limit: int | None = None) -> str:
        if offset >= self._length:
            return ""
        index = max(bisect.bisect_right(self._starts, offset) - 1, 0)
        parts = [self._chunks[index][offset - self._starts[index] :]]
        size = len(parts[0])
        for chunk in self._chunks[index + 1 :]:
            if limit is not None and size >= limit:
                break
            parts.append(chunk)
            size += len(chunk)
        text = "".join(parts)
        return text if limit is None else text[:limit]

    async def wait_beyond(self, offset: int, timeout: float) -> None:
        """Return when there is text past ``offset``, the command is done, or on timeout."""
        if self._length > offset or self.finished or timeout <= 0:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def last_line(self) -> str:
        """The last line as ``SubprocessHook`` takes it: the final ``readline()``, rstripped."""
        tail = bytes(self._tail[-TAIL_BYTES:])
        if tail.endswith(b"\n"):
            tail = tail[:-1]
        line = tail[tail.rfind(b"\n") + 1 :]
        text = self._clean(line.decode(self.encoding, errors="backslashreplace"))
        text = self._masker.mask(text, count=False)
        if self._detectors:
            text = self._detectors.peek(text)
        return text.rstrip()

    # -- internals ----------------------------------------------------------------------------
    def _clean(self, text: str) -> str:
        if self._sanitize:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        return text.replace("\x00", "\\x00") if "\x00" in text else text  # `in` is far faster

    def _append(self, text: str) -> None:
        if not text:
            return
        data = text.encode("utf-8")
        room = self._max - self._stored_bytes
        if len(data) > room:
            text = data[: max(room, 0)].decode("utf-8", "ignore")
            self.truncated = True
        self._stored_bytes += min(len(data), max(room, 0))
        self._store(text)

    def _store(self, text: str) -> None:
        if text:
            self._starts.append(self._length)
            self._chunks.append(text)
            self._length += len(text)

    def _notify(self) -> None:
        # Wake every current reader; later readers wait on a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()
