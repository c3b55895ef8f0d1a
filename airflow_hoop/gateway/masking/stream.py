"""Masking of a text stream (a shell command's output), readable while the command runs.

Text is masked a line at a time: what is shown never ends inside a line, so a value cannot be
cut in two by a chunk boundary. A line longer than ``max_line`` characters is cut at its last
whitespace. A PEM private key spans lines: after a BEGIN line without its END line, every line
is withheld until the END line (or the end of the output); likewise for PuTTY key files.
"""

from __future__ import annotations

import re2

from airflow_hoop.gateway.masking.engine import ResultMasker
from airflow_hoop.gateway.masking.methods import MaskingError

#: Where a multi-line private key starts and ends (PEM, PuTTY).
_BEGIN = re2.compile(r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|PuTTY-User-Key-File-[23]:")
_END = re2.compile(r"-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|Private-MAC: *[0-9a-fA-F]+")
WITHHELD = "[gateway] output withheld: it could not be masked\n"


class StreamMasker:
    """``feed`` text as it comes, get back what is safe to show; ``flush`` at the end."""

    def __init__(self, masker: ResultMasker, max_line: int = 65_536) -> None:
        self.masker = masker
        self.max_line = max_line
        self.failed: str | None = None
        self._pending = ""
        self._in_key = False

    def feed(self, text: str) -> str:
        self._pending += text
        cut = self._pending.rfind("\n") + 1
        if cut == 0 and len(self._pending) > self.max_line:
            space = max(self._pending.rfind(" "), self._pending.rfind("\t"))
            cut = space + 1 if space > 0 else len(self._pending)
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return self._mask(ready)

    def flush(self) -> str:
        ready, self._pending = self._pending, ""
        return self._mask(ready)

    def peek(self, text: str) -> str:
        """``text`` masked on its own, not counted (e.g. the last line, shown again)."""
        try:
            return self.masker.engine.start().mask_text(text)
        except MaskingError:
            return "[gateway] withheld"

    def _mask(self, text: str) -> str:
        if not text or self.failed is not None:
            return ""
        if self._in_key:
            end = _END.search(text)
            if end is None:
                return ""  # still inside the key: its placeholder was already shown
            text = text[end.end() :]
            self._in_key = False
        try:
            masked = self.masker.mask_text(text)
        except MaskingError as exc:
            self.failed = str(exc)
            return WITHHELD
        if "PRIVATE KEY" in text or "PuTTY-User-Key-File" in text:  # cheap test first
            begins = [m.start() for m in _BEGIN.finditer(text)]
            if begins and _END.search(text, begins[-1]) is None:
                self._in_key = True
        return masked
