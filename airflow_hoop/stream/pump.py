"""One batch at a time: check the chain, encode, deliver, then move the cursor.

The cursor moves only after the sink acknowledged the whole batch, so a crash or a failed
delivery repeats at most that batch (at least once, in order). A record that does not chain
is never delivered: the records before it are, then ChainBrokenError names it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from airflow_hoop.errors import ChainBrokenError, ConfigError
from airflow_hoop.stream.chain import ChainFollower, RawRecord
from airflow_hoop.stream.cursor import Cursor, CursorFile
from airflow_hoop.stream.formats import EventFormat
from airflow_hoop.stream.ocsf import CheckpointRef
from airflow_hoop.stream.sinks import Sink

#: Called after each acknowledged batch with the records it held (benches measure lag here).
Delivered = Callable[[Sequence[RawRecord]], None]


class StreamPump:
    """Delivers batches of ledger records to a sink, from and to a durable cursor."""

    def __init__(
        self,
        fmt: EventFormat,
        sink: Sink,
        cursor_file: CursorFile,
        on_delivered: Delivered | None = None,
    ) -> None:
        self.fmt, self.sink, self.cursor_file = fmt, sink, cursor_file
        self.on_delivered = on_delivered
        if not cursor_file.try_lock():
            raise ConfigError(
                f"another stream holds the cursor {cursor_file.path}",
                "run one stream per cursor file (stop the other, or give another --cursor)",
            )
        self.cursor: Cursor = cursor_file.load()
        self.chain = ChainFollower(self.cursor)
        self.delivered = 0

    def close(self) -> None:
        """Close the sink and let another stream take the cursor."""
        try:
            self.sink.close()
        finally:
            self.cursor_file.unlock()

    @property
    def seq(self) -> int:
        """The last acknowledged seq: read the ledger after it."""
        return self.cursor.seq

    def push(self, batch: Sequence[RawRecord]) -> None:
        """Deliver ``batch`` (records following the cursor, in order) and save the cursor."""
        checked: list[tuple[RawRecord, dict[str, Any]]] = []
        broken: ChainBrokenError | None = None
        try:
            for raw in batch:
                checked.append((raw, self.chain.check(raw)))
        except ChainBrokenError as exc:
            broken = exc
        try:
            if checked:
                self._deliver(checked)
        except BaseException:
            # Not acknowledged: the next read starts again after the cursor.
            self.chain = ChainFollower(self.cursor)
            raise
        if broken is not None:
            self.chain = ChainFollower(self.cursor)
            raise broken

    def _deliver(self, checked: list[tuple[RawRecord, dict[str, Any]]]) -> None:
        covering = _covering(checked)
        lines = [self.fmt.encode(raw, record, covering.get(raw.seq)) for raw, record in checked]
        self.sink.deliver(lines)
        last = checked[-1][0]
        self.cursor = self.cursor_file.save(last.seq, last.hash)
        self.delivered += len(checked)
        if self.on_delivered is not None:
            self.on_delivered([raw for raw, _ in checked])


def _covering(checked: list[tuple[RawRecord, dict[str, Any]]]) -> dict[int, CheckpointRef]:
    """The first checkpoint in the batch whose signed range reaches each record's seq.

    Records no checkpoint of the batch covers yet get none: a later checkpoint event names
    its range (``first_seq..last_seq``)."""
    checkpoints: list[tuple[int, int, CheckpointRef]] = []  # (last_seq, seq, ref)
    for raw, record in checked:
        body = record["body"]
        if body.get("kind") == "checkpoint":
            statement = body.get("statement") or {}
            ref = CheckpointRef(seq=raw.seq, number=int(statement.get("number", 0)))
            checkpoints.append((int(statement.get("last_seq", 0)), raw.seq, ref))
    if not checkpoints:
        return {}
    covering: dict[int, CheckpointRef] = {}
    for raw, _ in checked:
        for last_seq, seq, ref in checkpoints:  # in seq order: the first that reaches it
            if seq > raw.seq and last_seq >= raw.seq:
                covering[raw.seq] = ref
                break
    return covering


def follow(
    pump: StreamPump,
    read: Callable[[int], Iterable[RawRecord]],
    *,
    batch_size: int = 1000,
    poll_seconds: float = 0.5,
    keep_following: bool = True,
    stop: threading.Event | None = None,
) -> int:
    """Read after the cursor and deliver in batches, until ``stop`` (or the head, when not
    ``keep_following``). Returns the number of records delivered."""
    stop = stop or threading.Event()
    while not stop.is_set():
        # One read runs to the ledger's head; then wait, so an idle stream asks once a poll.
        batch: list[RawRecord] = []
        for raw in read(pump.seq):
            batch.append(raw)
            if len(batch) >= batch_size:
                pump.push(batch)
                batch = []
                if stop.is_set():
                    return pump.delivered
        if batch:
            pump.push(batch)
        if not keep_following:
            break
        stop.wait(poll_seconds)
    return pump.delivered
