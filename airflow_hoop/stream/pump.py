"""One batch at a time: check the chain, encode, deliver, then move the cursor.

The cursor moves only after the sink acknowledged the whole batch, so a crash or a failed
delivery repeats at most that batch (at least once, in order). A record that does not chain
is never delivered: the records before it are, then ChainBrokenError names it.

With ``signed_only`` (which needs the pinned public key) a record is held until a checkpoint
whose signature verifies covers it: a database administrator who rewrites records and the
chain after them cannot get one delivered, at the cost of the checkpoint interval in lag.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from airflow_hoop.errors import ChainBrokenError, ConfigError
from airflow_hoop.ledger.checkpoint import PublicKeySet
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
        *,
        keys: PublicKeySet | None = None,
        signed_only: bool = False,
    ) -> None:
        if signed_only and keys is None:
            raise ConfigError(
                "delivering signed records only needs the checkpoint public key",
                "pin it with --public-key (or public_key_file in the settings)",
            )
        self.fmt, self.sink, self.cursor_file = fmt, sink, cursor_file
        self.on_delivered = on_delivered
        self.keys, self.signed_only = keys, signed_only
        #: checked records waiting for a verified checkpoint (signed_only)
        self._held: list[tuple[RawRecord, dict[str, Any]]] = []
        if not cursor_file.try_lock():
            raise ConfigError(
                f"another stream holds the cursor {cursor_file.path}",
                "run one stream per cursor file (stop the other, or give another --cursor)",
            )
        self.cursor: Cursor = cursor_file.load()
        self.chain = ChainFollower(self.cursor, keys)
        self.delivered = 0

    def close(self) -> None:
        """Close the sink and let another stream take the cursor."""
        try:
            self.sink.close()
        finally:
            self.cursor_file.unlock()

    @property
    def seq(self) -> int:
        """The last acknowledged seq (the cursor's)."""
        return self.cursor.seq

    @property
    def read_after(self) -> int:
        """Read the ledger after this seq: the last checked one (held records included)."""
        return self.chain.seq

    def _restart(self) -> None:
        # Not acknowledged: the next read starts again after the cursor.
        self.chain = ChainFollower(self.cursor, self.keys)
        self._held = []

    def push(self, batch: Sequence[RawRecord]) -> None:
        """Deliver ``batch`` (records following the cursor, in order) and save the cursor."""
        checked: list[tuple[RawRecord, dict[str, Any]]] = []
        broken: ChainBrokenError | None = None
        try:
            for raw in batch:
                checked.append((raw, self.chain.check(raw)))
        except ChainBrokenError as exc:
            broken = exc
        if self.signed_only:
            checked = self._release(checked, broken is not None)
        try:
            if checked:
                self._deliver(checked)
        except BaseException:
            self._restart()
            raise
        if broken is not None:
            self._restart()
            raise broken

    def _release(
        self, checked: list[tuple[RawRecord, dict[str, Any]]], broken: bool
    ) -> list[tuple[RawRecord, dict[str, Any]]]:
        """The held records a verified checkpoint now covers; the rest stay held (a broken
        chain drops them: nothing unsigned before a break is delivered)."""
        held = self._held + checked
        covered = 0
        for _raw, record in held:
            body = record["body"]
            if body.get("kind") == "checkpoint":  # verified by the chain check
                covered = max(covered, int(body["statement"]["last_seq"]))
        cut = next((i for i, (raw, _) in enumerate(held) if raw.seq > covered), len(held))
        self._held = [] if broken else held[cut:]
        return held[:cut]

    def _deliver(self, checked: list[tuple[RawRecord, dict[str, Any]]]) -> None:
        # signed_only: the covering checkpoint may be among the records still held.
        covering = _covering(checked + self._held)
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
        for raw in read(pump.read_after):
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
