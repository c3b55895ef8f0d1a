"""Apply a masking policy to SQL result rows and to text, and count what was masked.

Rows are masked a column at a time: a column under a column rule gets the rule's method on
every value; every other column is scanned by the detectors. The text cells of a column are
joined (NUL-separated: Postgres text cannot hold NUL) into one UTF-8 buffer that the scanner
reads in one pass, so the cost per row is a few bytes of DFA work, not a regex call per cell;
the masked buffer is split at the NULs again. A column without a match is returned as it
was, without a copy, and so are the rows when no column changed.

Nothing unmasked leaves on error: in best-effort mode the value in error is replaced whole and
counted; in strict mode ``MaskingError`` is raised and the caller withholds the output.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_hoop.gateway.masking.detectors import BY_NAME, Detector
from airflow_hoop.gateway.masking.methods import (
    REDACTED,
    Hasher,
    MaskingError,
    column_method,
    text_method,
    value_method,
)
from airflow_hoop.gateway.masking.rules import MaskingPolicy, column_pattern_parts
from airflow_hoop.gateway.masking.scanner import Hit, Scanner
from airflow_hoop.ledger.records import MaskingRecord

#: Values of these types hold nothing a detector looks for.
_SKIPPED = (bool, float, dt.date, dt.time, dt.timedelta, uuid.UUID)
#: Numbers shorter than this many digits cannot be a card, an IBAN or an SSN.
_MIN_NUMBER = 10**8
_MAX_ERRORS_LISTED = 10
#: Results with at least this many rows are masked with the garbage collector paused.
_GC_PAUSE_ROWS = 10_000


@dataclass(frozen=True)
class ColumnInfo:
    """A result column: its name, and where Postgres says it comes from (when it does)."""

    name: str
    table: str | None = None
    schema: str | None = None
    source: str | None = None


class MaskingEngine:
    """A compiled policy (plus its HMAC key). Immutable: one per connection, shared."""

    def __init__(self, policy: MaskingPolicy, hasher: Hasher | None = None) -> None:
        self.policy = policy
        self.version = policy.version
        self.hasher = hasher
        detectors = [BY_NAME[d.name] for d in policy.detectors]
        methods = [d.method for d in policy.detectors]
        for custom in policy.custom:
            detectors.append(Detector(custom.name, custom.name.upper(), custom.regex))
            methods.append(custom.method)
        self.scanner = Scanner(detectors)
        self.methods = methods
        self.names = [d.name for d in detectors]
        self._replace = [
            text_method(m, d.info_type, hasher) for d, m in zip(detectors, methods, strict=True)
        ]
        self._rules = [
            (rule.name, [column_pattern_parts(p) for p in rule.columns],
             value_method(rule.method, rule.keep_last, hasher))
            for rule in policy.columns
        ]  # fmt: skip
        self._columns = [
            column_method(rule.method, rule.keep_last, hasher) for rule in policy.columns
        ]
        self._plans: dict[tuple[ColumnInfo, ...], list[int | None]] = {}

    @property
    def needs_sources(self) -> bool:
        """Do column rules need each column's source table and column (a catalog lookup)?"""
        return bool(self.policy.columns)

    def start(self) -> ResultMasker:
        """A masker for one command's output; it accumulates that command's record."""
        return ResultMasker(self)

    def plan(self, columns: Sequence[ColumnInfo]) -> list[int | None]:
        """For each column, the index of the first column rule that covers it, or None."""
        key = tuple(columns)
        cached = self._plans.get(key)
        if cached is None:
            cached = [self._rule_for(c) for c in columns]
            self._plans[key] = cached
        return cached

    def _rule_for(self, column: ColumnInfo) -> int | None:
        names = {column.name.lower()} | ({column.source.lower()} if column.source else set())
        for index, (_name, patterns, _method) in enumerate(self._rules):
            for parts in patterns:
                if len(parts) == 1:
                    if any(parts[0].match(n) for n in names):
                        return index
                    continue
                if column.table is None or column.source is None:
                    continue
                ok = parts[0].match(column.source.lower()) and parts[1].match(column.table.lower())
                if ok and (len(parts) == 2 or parts[2].match((column.schema or "").lower())):
                    return index
        return None


class ResultMasker:
    """Masks one command's output and counts what it masked."""

    def __init__(self, engine: MaskingEngine) -> None:
        self.engine = engine
        self.info_types: Counter[str] = Counter()
        self.columns: Counter[str] = Counter()
        self.errors: list[str] = []
        self.err_count = 0
        self.unmasked_to_task = False
        self._used_hash = False

    # -- rows --------------------------------------------------------------------------------
    def mask_rows(self, columns: Sequence[ColumnInfo], rows: list[tuple[Any, ...]]) -> list[Any]:
        """The rows with the policy applied (the same list when nothing had to change)."""
        if not rows or not columns:
            return rows
        if len(rows) < _GC_PAUSE_ROWS:
            return self._mask_rows(columns, rows)
        with _gc_paused():
            return self._mask_rows(columns, rows)

    def _mask_rows(self, columns: Sequence[ColumnInfo], rows: list[tuple[Any, ...]]) -> list[Any]:
        plan = self.engine.plan(columns)
        cols: list[Sequence[Any]] = list(zip(*rows, strict=True))
        changed = False
        for j, rule in enumerate(plan):
            name = columns[j].name
            if rule is not None:
                new = self._apply_rule(rule, name, cols[j])
            else:
                new = self._scan_column(name, cols[j])
            if new is not None:
                cols[j] = new
                changed = True
        return list(zip(*cols, strict=True)) if changed else rows

    def _apply_rule(self, rule: int, column: str, values: Sequence[Any]) -> list[Any] | None:
        name, _patterns, method = self.engine._rules[rule]
        count = len(values) - values.count(None)
        if not count:
            return None
        self.info_types[name] += count
        self.columns[column] += count
        self._used_hash |= self.engine.policy.columns[rule].method == "hash"
        if count == len(values) and set(map(type, values)) == {str}:
            return self.engine._columns[rule](list(values))  # the usual text column
        return [None if v is None else method(v) for v in values]

    def _scan_column(self, column: str, values: Sequence[Any]) -> list[Any] | None:
        if not self.engine.scanner.detectors:
            return None
        try:  # the usual text column: joining it is the test that every value is text
            blob = "\x00".join(values)
        except TypeError:
            pass
        else:
            return self._scan_texts(column, values, range(len(values)), blob)
        types = set(map(type, values))
        nulls = type(None) in types
        types.discard(type(None))
        out: list[Any] | None = None
        if str in types:
            if types == {str} and not nulls:
                texts: Sequence[int] = range(len(values))
            else:
                texts = [i for i, v in enumerate(values) if type(v) is str]
            out = self._scan_texts(column, values, texts)
            types.discard(str)
        if not types or all(issubclass(t, _SKIPPED) for t in types):
            return out
        for i in self._candidates(values, types, nulls):
            v = values[i]
            masked = self._guard(column, v, lambda x: self._scan_other(x, column))
            if masked is not v:
                out = out if out is not None else list(values)
                out[i] = masked
        return out

    @staticmethod
    def _candidates(values: Sequence[Any], types: set[type], nulls: bool) -> list[int]:
        """Cells that may hold something: long numbers, bytes, JSON, unknown types."""
        if types <= {int, Decimal}:  # the common numeric column: one pass, no calls
            big = _MIN_NUMBER
            present = [v for v in values if v is not None] if nulls else values
            if not present or (max(present) < big and min(present) > -big):
                return []
            return [
                i
                for i, v in enumerate(values)
                if v is not None and type(v) is not str and (v >= big or v <= -big)
            ]
        return [
            i
            for i, v in enumerate(values)
            if v is not None and type(v) is not str and not isinstance(v, _SKIPPED)
        ]

    def _scan_texts(
        self, column: str, values: Sequence[Any], texts: Sequence[int], blob: str | None = None
    ) -> list[Any] | None:
        """Scan the text cells ``texts`` of ``values`` (``blob``: them joined, if known)."""
        limit = self.engine.policy.max_cell_bytes
        cells: Sequence[str] = values if isinstance(texts, range) else [values[i] for i in texts]
        if blob is None:
            blob = "\x00".join(cells)
        too_big: list[int] = []
        # Cheap test first: a character is <= 4 bytes, so only a cell of more than limit/4
        # characters can be too big.
        if _may_hold_run(blob, len(cells), limit // 4):
            too_big = [k for k, c in enumerate(cells) if _utf8_len(c) > limit]
        out: list[Any] | None = None
        if too_big:
            out = list(values)
            cells = list(cells)
            for k in too_big:
                out[texts[k]] = self._error(column, f"a value larger than {limit} bytes")
                cells[k] = ""
            blob = "\x00".join(cells)
        try:
            if blob.count("\x00") != len(cells) - 1:
                raise ValueError("a value holds NUL")  # not from Postgres: cell by cell below
            data = blob.encode("utf-8")
            hits = self.engine.scanner.scan(data)
        except Exception:
            # Find the value at fault one cell at a time (and mask the others normally).
            out = out if out is not None else list(values)
            for k, cell in enumerate(cells):
                if cell:
                    out[texts[k]] = self._guard(
                        column, cell, lambda x: self.mask_text_value(x, column)
                    )
            return out
        if not hits:
            return out
        # Only the cells with a hit are rebuilt; the others stay the very same objects.
        out = out if out is not None else list(values)
        for k, text in self._masked_cells(data, _within_cells(data, hits), column):
            out[texts[k]] = text  # never a too big cell: those were scanned empty
        return out

    def _masked_cells(
        self, data: bytes, spans: list[tuple[int, int, int]], column: str
    ) -> Iterator[tuple[int, str]]:
        """(cell number, masked text) of each cell of ``data`` that ``spans`` fall in.

        Spans are in order and never cover a NUL; a cell's number is the count of NULs before
        it, counted once from one cell with a hit to the next (a linear pass in C).
        """
        cell, counted, i, n = 0, 0, 0, len(spans)
        while i < n:
            start = spans[i][0]
            cell += data.count(b"\x00", counted, start)
            counted = start
            lo = data.rfind(b"\x00", 0, start) + 1
            hi = data.find(b"\x00", start)
            hi = len(data) if hi < 0 else hi
            j = i + 1
            while j < n and spans[j][0] < hi:
                j += 1
            yield cell, self._rebuild(data, spans[i:j], column, lo, hi).decode("utf-8")
            i = j

    def _scan_other(self, value: Any, column: str | None) -> Any:
        """Bytes, numbers, JSON and unknown types (the per-value path)."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            hits = self.engine.scanner.scan(data)
            if not hits:
                return value
            return self._rebuild(data, [(h.start, h.end, h.detector) for h in hits], column)
        if isinstance(value, (int, Decimal)):
            if isinstance(value, Decimal) and not value.is_finite():
                return value
            if -_MIN_NUMBER < value < _MIN_NUMBER:
                return value
            text = str(value)
            masked = self.mask_text_value(text, column)
            return value if masked == text else masked
        if isinstance(value, dict):  # JSON: keys and values
            return {self._scan_any(k, column): self._scan_any(v, column) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scan_any(v, column) for v in value]
        text = str(value)
        masked = self.mask_text_value(text, column)
        return value if masked == text else masked

    def _scan_any(self, value: Any, column: str | None) -> Any:
        if type(value) is str:
            return self.mask_text_value(value, column)
        if value is None or isinstance(value, _SKIPPED):
            return value
        return self._scan_other(value, column)

    # -- text --------------------------------------------------------------------------------
    def mask_text(self, text: str) -> str:
        """Detectors applied to free text (shell output, messages); errors as the mode says."""
        return self._guard("(text)", text, self.mask_text_value)  # type: ignore[no-any-return]

    def mask_text_value(self, text: str, column: str | None = None) -> str:
        data = text.encode("utf-8", "surrogatepass")
        if len(data) > self.engine.policy.max_cell_bytes:
            raise _TooBig(self.engine.policy.max_cell_bytes)
        hits = self.engine.scanner.scan(data)
        if not hits:
            return text
        rebuilt = self._rebuild(data, [(h.start, h.end, h.detector) for h in hits], column)
        return rebuilt.decode("utf-8", "surrogatepass")

    def _rebuild(
        self,
        data: bytes,
        spans: list[tuple[int, int, int]],
        column: str | None,
        lo: int = 0,
        hi: int | None = None,
    ) -> bytes:
        """``data[lo:hi]`` with each span replaced (spans lie within it), and counted."""
        pieces, pos = [], lo
        replace, names, methods = self.engine._replace, self.engine.names, self.engine.methods
        for start, end, index in spans:
            pieces.append(data[pos:start])
            pieces.append(replace[index](data[start:end]))
            pos = end
            self.info_types[names[index]] += 1
            if methods[index] == "hash":
                self._used_hash = True
        if column is not None:
            self.columns[column] += len(spans)
        pieces.append(data[pos:hi])
        return b"".join(pieces)

    # -- errors and the record ---------------------------------------------------------------
    def _guard(self, column: str, value: Any, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(value)
        except _TooBig as exc:
            return self._error(column, f"a value larger than {exc.limit} bytes")
        except MaskingError:
            raise
        except Exception as exc:  # a detector's check failed on this value
            return self._error(column, f"a detector failed ({type(exc).__name__})")

    def _error(self, column: str, what: str) -> str:
        message = f"column {column}: {what}" if column != "(text)" else f"output: {what}"
        self.err_count += 1
        if len(self.errors) < _MAX_ERRORS_LISTED and message not in self.errors:
            self.errors.append(message)
        if self.engine.policy.mode == "strict":
            raise MaskingError(
                f"masking policy {self.engine.policy.name!r} (strict) could not mask the output "
                f"({message}); the command ran but its output is withheld"
            )
        return REDACTED

    def record(self) -> MaskingRecord:
        """What the ledger's result record says about masking (names and counts only)."""
        hasher = self.engine.hasher
        return MaskingRecord(
            policy=self.engine.policy.name,
            version=self.engine.version,
            mode=self.engine.policy.mode,
            unmasked_to_task=self.unmasked_to_task,
            info_types=dict(sorted(self.info_types.items())),
            columns=dict(sorted(self.columns.items())),
            total_redact_count=sum(self.info_types.values()),
            err_count=self.err_count,
            errors=list(self.errors),
            hmac_key=hasher.key_ref if hasher is not None and self._used_hash else None,
        )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large result is rebuilt.

    Rebuilding a result allocates millions of tuples and strings, none in a cycle; each
    allocation burst would otherwise trigger collections that walk every live object (a third
    of the masking time at 10^6 rows). Cycles made meanwhile elsewhere are collected after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _TooBig(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _may_hold_run(blob: str, cells: int, chars: int) -> bool:
    """May ``blob`` hold more than ``chars`` characters in a row without a NUL (a cell that
    long)? False only when it cannot: such a run covers a whole aligned window of
    ``chars // 2`` characters, so a NUL in every window rules it out. That is a few ``find``
    calls for a column of a million cells, instead of measuring each cell."""
    if len(blob) <= chars:
        return False
    width = max(1, chars // 2)
    if len(blob) // width > cells:  # more windows than cells: measuring the cells is cheaper
        return True
    return any(blob.find("\x00", a, a + width) < 0 for a in range(0, len(blob), width))


def _within_cells(data: bytes, hits: list[Hit]) -> list[tuple[int, int, int]]:
    """The hits as spans that never cover a NUL (a cell separator): a hit over several cells
    (a private key split across rows) becomes one span per cell, so each cell masks its part."""
    spans: list[tuple[int, int, int]] = []
    for start, end, detector in hits:
        nul = data.find(b"\x00", start, end)
        while nul >= 0:
            if nul > start:
                spans.append((start, nul, detector))
            start = nul + 1
            nul = data.find(b"\x00", start, end)
        if end > start:
            spans.append((start, end, detector))
    return spans
