"""Is a bundle's claimed time window consistent with the records it holds?

``audit export`` asks the gateway for the window ``since <= time < until`` as a seq range
(``first_seq``..``last_seq``, ``records`` of them: min, max and count of the records whose
time is in the window) and writes the records from a signed checkpoint before it to the
checkpoint that covers its end. The manifest's ``window`` says so, and a reviewer reads it: an
edited window would make the bundle claim another period. The records' times are signed (they
are in the hashed records), so offline verify recomputes the export's query over the records
in the bundle:

- the records ``first_seq``..``last_seq`` are in the bundle, ``records`` of them have a time
  in the window, and the first and the last of them do;
- no record before ``first_seq`` has a time in the window (the gateway's ``min(seq)``);
- records after ``last_seq`` are outside the window, except when the window was still open
  at the export (``until`` in the future): the records written after the gateway counted
  the window then all fall in it. That case verifies with a warning, since the report
  covers ``first_seq``..``last_seq`` only.

Bound: only the records in the bundle can be checked. A ``since`` moved earlier than the
bundle's first record, or an ``until`` moved past its last one, is consistent with them.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow_hoop.ledger.manifest import BundleRange, BundleWindow


def _aware(value: datetime) -> datetime:
    """A time without a zone is UTC (as ``audit export --since/--until`` read it)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


class WindowCheck:
    """Fed the (seq, time) of every record verify accepted; ``problem`` says what does not fit."""

    def __init__(self, window: BundleWindow, span: BundleRange | None) -> None:
        self.since, self.until = _aware(window.since), _aware(window.until)
        self.first, self.last, self.records = window.first_seq, window.last_seq, window.records
        self.span = span
        self._inside = 0  # records first..last with a time in the window
        self._before: tuple[int, str] | None = None  # first record before the window inside it
        self._after_in: tuple[int, str] | None = None  # first record after the window inside it
        self._after_out: tuple[int, str] | None = None  # ... and outside it
        self._after_count = 0
        self._unreadable: int | None = None
        self._ends_outside: list[tuple[int, str]] = []
        self.warning: str | None = None

    def _claim(self) -> str:
        return f"the manifest's window ({self.since.isoformat()} to {self.until.isoformat()})"

    def structure(self) -> str | None:
        """What is wrong before any record is read (the window's own numbers, the range)."""
        if self.records == 0:
            if self.first is not None or self.last is not None:
                return f"{self._claim()} counts no records but names seq {self.first}..{self.last}"
            if self.span is not None:
                return f"{self._claim()} counts no records but the bundle holds records"
            return None
        if self.first is None or self.last is None or self.records < 0:
            return f"{self._claim()} counts {self.records} records but names no seq range"
        if self.first > self.last or self.records > self.last - self.first + 1:
            return (
                f"{self._claim()} counts {self.records} records in seq "
                f"{self.first}..{self.last}, which cannot hold them"
            )
        span = self.span
        if span is None or span.first_seq > self.first or span.last_seq < self.last:
            held = "no records" if span is None else f"seq {span.first_seq}..{span.last_seq}"
            return (
                f"{self._claim()} lies at seq {self.first}..{self.last}, outside the records "
                f"in the bundle ({held})"
            )
        return None

    def add(self, seq: int, time: object) -> None:
        """One record verify accepted: its seq and the ``time`` it states."""
        try:
            if not isinstance(time, str):
                raise ValueError(time)
            when = _aware(datetime.fromisoformat(time))
        except ValueError:
            self._unreadable = self._unreadable or seq
            return
        inside = self.since <= when < self.until
        if self.first is None or self.last is None:
            self._after(seq, time, inside)
        elif seq < self.first:
            if inside and self._before is None:
                self._before = (seq, time)
        elif seq <= self.last:
            self._inside += inside
            if not inside and seq in (self.first, self.last):
                self._ends_outside.append((seq, time))
        else:
            self._after(seq, time, inside)

    def _after(self, seq: int, time: str, inside: bool) -> None:
        self._after_count += 1
        if inside and self._after_in is None:
            self._after_in = (seq, time)
        if not inside and self._after_out is None:
            self._after_out = (seq, time)

    def problem(self) -> str | None:
        """The first inconsistency between the window and the records, or None."""
        if self._unreadable is not None:
            return f"record seq {self._unreadable} states no readable time"
        claim = self._claim()
        if self._ends_outside:
            seq, time = self._ends_outside[0]
            end = "first" if seq == self.first else "last"
            return f"{claim} does not hold its {end} record, seq {seq} at {time}"
        if self._inside != self.records:
            return (
                f"{claim} counts {self.records} records in seq {self.first}..{self.last}, "
                f"but {self._inside} of them have a time in it"
            )
        if self._before is not None:
            seq, time = self._before
            return f"record seq {seq} at {time} falls in {claim}, which starts at seq {self.first}"
        if self._after_in is not None:
            seq, time = self._after_in
            if self._after_out is not None:
                return f"record seq {seq} at {time} falls in {claim}, which ends at seq {self.last}"
            # Every record after the window is in it: written after the export counted it.
            self.warning = (
                f"the window was still open at the export: the {self._after_count} records "
                f"from seq {seq} on fall in it but were written after it was counted; the "
                "report covers the counted records only"
            )
        return None
