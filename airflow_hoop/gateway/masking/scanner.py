"""Find what the detectors match in a buffer, in one linear-time pass.

A buffer may hold many cells of a column separated by NUL; only a detector marked
``multi_cell`` (private keys) matches across a NUL.

All patterns are compiled into one RE2 alternation, so a buffer is read once however many
detectors a policy names (RE2 runs a DFA: time is linear in the input, whatever the pattern,
so a pathological custom regex cannot stall the gateway). A candidate that its detector's
check rejects is not the end of the story at that position: the other detectors are tried
there on their own, and the scan resumes one byte later, so a rejected candidate never hides
a real match that overlaps it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import re2
from re2 import _re2 as _core  # type: ignore[attr-defined]

from airflow_hoop.gateway.masking.detectors import Detector, Span

#: RE2's memory budget per compiled pattern (the DFA cache). Past it RE2 refuses the pattern
#: at load time ("pattern too large"), never at run time.
MAX_PATTERN_MEMORY = 64 << 20


def re2_options() -> re2.Options:
    options = re2.Options()
    options.max_mem = MAX_PATTERN_MEMORY
    options.log_errors = False
    return options


def compile_pattern(pattern: str) -> re2._Regexp:
    """Compile RE2 syntax to a bytes pattern; raises ``re2.error`` with RE2's reason."""
    return re2.compile(pattern.encode("utf-8"), re2_options())


class _Program:
    """One RE2 program, called through the binding's core (``re2._re2``).

    The public wrapper builds a match object per call and re-encodes ``str`` input each time;
    on a 100 MB buffer with 10^5 matches that costs more than the matching itself. Here input
    is always bytes and a call returns plain spans.
    """

    __slots__ = ("_re", "groups")

    def __init__(self, pattern: str) -> None:
        compiled = compile_pattern(pattern)  # raises re2.error with RE2's message
        self._re = _core.RE2(pattern.encode("utf-8"), re2_options())
        self.groups = compiled.groups

    def search(self, buf: bytes, pos: int) -> list[Span]:
        return self._re.Match(_UNANCHORED, buf, pos, len(buf))  # type: ignore[no-any-return]

    def match(self, buf: bytes, pos: int, endpos: int | None = None) -> list[Span]:
        end = len(buf) if endpos is None else endpos
        return self._re.Match(_ANCHOR_START, buf, pos, end)  # type: ignore[no-any-return]


_UNANCHORED = _core.RE2.Anchor.UNANCHORED
_ANCHOR_START = _core.RE2.Anchor.ANCHOR_START
_NO_MATCH = (-1, -1)
#: ``Hit(...)`` without the Python-level ``__new__`` of a named tuple (once per match).
_new_hit = tuple.__new__


class Hit(NamedTuple):
    """A span to mask and the detector (index into the scanner's list) that found it."""

    start: int
    end: int
    detector: int


class Scanner:
    """The compiled detectors of one policy. Immutable and thread-safe."""

    def __init__(self, detectors: list[Detector]) -> None:
        self.detectors = detectors
        self._singles = [_Program(d.pattern) for d in detectors]
        # Each detector's outer group in the grouped alternation (its own groups follow it).
        self._groups: list[int] = []
        group = 1
        for single in self._singles:
            self._groups.append(group)
            group += 1 + single.groups
        # Finding matches without capture groups is twice as fast. Which detector matched is
        # asked of an RE2 set (a DFA) on the match alone; the grouped alternation (an NFA
        # run, 5x slower) is the fallback only.
        self._fast = (
            _Program("|".join(f"(?:{d.pattern})" for d in detectors)) if detectors else None
        )
        self._grouped = (
            _Program("|".join(f"({d.pattern})" for d in detectors)) if detectors else None
        )
        self._set = re2.Set.MatchSet(re2_options())
        for d in detectors:
            self._set.Add(d.pattern.encode("utf-8"))
        if detectors:
            self._set.Compile()
        # The binding's core call (bytes in, list of indices out), without the wrapper's
        # frame: it runs once per match.
        self._set_match = self._set._set.Match  # type: ignore[attr-defined]
        self._checks = [d.check for d in detectors]
        self._multi_cell = [d.multi_cell for d in detectors]

    def scan(self, buf: bytes) -> list[Hit]:
        """Every span to mask in ``buf``, in order, not overlapping."""
        hits: list[Hit] = []
        if self._fast is None:
            return hits
        # This loop runs once per match (10^5 times in a large column): the calls it makes
        # are bound once here, and it calls the binding's core directly (no wrapper frames).
        match, set_match = self._fast._re.Match, self._set_match
        checks, multi_cell, append = self._checks, self._multi_cell, hits.append
        size, pos = len(buf), 0
        while pos < size:
            start, end = match(_UNANCHORED, buf, pos, size)[0]
            if start < 0:
                break
            found_by = set_match(buf[start:end])  # _which, inlined
            index = min(found_by) if found_by else self._which(buf, start, end)
            if not multi_cell[index] and buf.find(b"\x00", start, end) >= 0:
                # NUL separates the cells of a column: match again within this cell.
                end = self._singles[index].match(buf, start, buf.index(b"\x00", start))[0][1]
            check = checks[index]
            if end <= start:
                found: list[Span] = []
            elif check is None:
                found = [(start, end)]
            else:
                found = check(buf, start, end)
            if not found:
                found, index = self._others_at(buf, start, index)
            if not found:
                pos = start + 1  # rejected: a real match may still start inside it
                continue
            for s, e in found:
                append(_new_hit(Hit, (s, e, index)))
            last = found[-1][1]
            pos = last if last > start else start + 1
        return hits

    def _which(self, buf: bytes, start: int, end: int) -> int:
        """The detector whose match the alternation found at ``start`` (the first that matches).

        Asked of the set on the match alone; at its edges the context differs from the
        buffer's (a ``\\b`` at the end), so the answer can be wrong in rare cases. That costs
        no recall: a wrong detector's check rejects the match and the others are tried.
        """
        found: Any = self._set_match(buf[start:end])  # indices
        if found:
            return min(found)
        assert self._grouped is not None
        spans = self._grouped.match(buf, start)
        return next(i for i, g in enumerate(self._groups) if spans[g] != _NO_MATCH)

    def _check(self, index: int, buf: bytes, start: int, end: int) -> list[Span]:
        check = self.detectors[index].check
        if end <= start:
            return []  # an empty match masks nothing (custom patterns are refused if so)
        return [(start, end)] if check is None else check(buf, start, end)

    def _others_at(self, buf: bytes, start: int, rejected: int) -> tuple[list[Span], int]:
        """The first other detector that matches (and passes its check) at ``start``."""
        nul = buf.find(b"\x00", start)
        for index, single in enumerate(self._singles):
            if index == rejected:
                continue
            limit = None if nul < 0 or self.detectors[index].multi_cell else nul
            s, e = single.match(buf, start, limit)[0]
            if s >= 0:
                found = self._check(index, buf, s, e)
                if found:
                    return found, index
        return [], rejected
