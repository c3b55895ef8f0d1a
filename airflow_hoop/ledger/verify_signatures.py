"""Checkpoint signatures checked in background threads while the chain pass goes on.

Ed25519 releases the GIL, so two threads check signatures while the main thread hashes the
chain. Results are collected in seq order, so the first invalid signature is reported at its own
seq even when a later chain failure was found first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from airflow_hoop.ledger.checkpoint import PublicKeySet, signature_valid

#: Checks queued before the finished ones are collected (bounds memory on long ledgers).
MAX_QUEUED = 64


class SignatureChecks:
    """A queue of background signature checks, each with the seq and message of its failure."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._queue: deque[tuple[int, str, str | None, Future[bool]]] = deque()

    def submit(self, seq: int, message: str, body: dict[str, Any], keys: PublicKeySet) -> None:
        """A checkpoint's signature (Vault's key)."""
        self.submit_check(seq, message, signature_valid, body, keys)

    def submit_check(
        self,
        seq: int,
        message: str,
        check: Callable[..., bool],
        *args: Any,
        kind: str | None = None,
    ) -> None:
        """Any Ed25519 check; ``kind`` names the failure kind (default: signature invalid)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ed25519")
        self._queue.append((seq, message, kind, self._executor.submit(check, *args)))

    @property
    def crowded(self) -> bool:
        return len(self._queue) > MAX_QUEUED

    def first_invalid(
        self, *, upto: int | None, only_done: bool, before_batches: bool = False
    ) -> tuple[int, str, str | None] | None:
        """Collect checks in seq order (those with seq <= ``upto``; with ``only_done``, stop at
        the first still running); the first invalid one is returned and the rest dropped."""
        while self._queue:
            seq, message, kind, future = self._queue[0]
            if (upto is not None and seq > upto) or (only_done and not future.done()):
                return None
            if before_batches and seq == upto and kind is not None:
                return None  # a chain failure at the same seq is the more precise one
            self._queue.popleft()
            if not future.result():
                self._queue.clear()
                return seq, message, kind
        return None

    def clear(self) -> None:
        self._queue.clear()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
