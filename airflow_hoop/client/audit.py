"""The auditor's side of the gateway API: read-only ledger pages, checkpoints, the public key,
time windows and the raw record stream. Authenticated with an auditor (or admin) API key.

Nothing here can change a record: the gateway has no such endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, NamedTuple

import httpx

from airflow_hoop.client.http import GatewayClient
from airflow_hoop.errors import GatewayUnavailableError
from airflow_hoop.ledger.chain import GENESIS_HASH, StoredRecord
from airflow_hoop.ledger.checkpoint import PublicKeySet
from airflow_hoop.ledger.manifest_sig import ManifestSignRequest, SignedManifest
from airflow_hoop.wire.ledger import CheckpointPage, KeyCertificates, LedgerPage, LedgerWindow

LEDGER = "/api/airflow-hoop/ledger"
#: Window bounds (``window``): any time before the first record, after the last one.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=timezone.utc)


class StreamedRecord(NamedTuple):
    """One line of ``GET /api/airflow-hoop/ledger/stream``: the stored bytes, as hashed."""

    seq: int
    hash: str
    data: bytes
    #: The batch signature when this record ends a batch (``ledger/batch.py``).
    batch: str | None = None


_PREFIX = b'{"seq":'
_HASH = b',"hash":"'
_RECORD = b'","record":'
_BATCH = b'","batch":"'
_END = b'{"end":'


def parse_stream_line(line: bytes) -> StreamedRecord | dict[str, Any]:
    """A record line, or the trailer ``{"end": true, ...}`` as a dict.

    Sliced, never re-encoded: the record's bytes are exactly what the gateway stored.
    """
    if line.startswith(_END):
        trailer = json.loads(line)
        if isinstance(trailer, dict) and trailer.get("end") is True:
            return trailer
    cut = line.find(_HASH, 0, 40)
    start = cut + len(_HASH)
    after = start + 64
    batch = None
    if line[after : after + len(_BATCH)] == _BATCH:
        # A batch signature holds no quote or backslash (hex, digits, dots, base64).
        close = line.find(b'"', after + len(_BATCH), after + len(_BATCH) + 200)
        if close < 0:
            raise ValueError("not a line of the ledger stream")
        batch = line[after + len(_BATCH) : close].decode("ascii")
        after = close  # the closing quote opens `","record":`
    body = after + len(_RECORD)
    if (
        not line.startswith(_PREFIX)
        or cut < 0
        or line[after:body] != _RECORD
        or not line.endswith(b"}")
    ):
        raise ValueError("not a line of the ledger stream")
    return StreamedRecord(
        int(line[len(_PREFIX) : cut]), line[start : start + 64].decode(), line[body:-1], batch
    )


class AuditClient:
    """A small synchronous client for the auditor endpoints.

    Requests go through :class:`~airflow_hoop.client.http.GatewayClient` (the API key as
    bearer, retries of these idempotent reads, typed errors from ``client/errors.py``).
    """

    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = 60.0, ca_file: str | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._gateway = GatewayClient(
            self.base_url,
            token=lambda: api_key,
            timeout=timeout,
            user_client="airflow-hoop-audit",
            ca_file=ca_file,
            unreachable_fix="check the gateway URL and that the gateway runs",
        )

    def close(self) -> None:
        self._gateway.close()

    def __enter__(self) -> AuditClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ledger_page(self, after_seq: int = 0, limit: int = 1000, **filters: Any) -> LedgerPage:
        """Filters: since, until (datetimes), dag_id, task_id, run_id, connection."""
        params = {"after_seq": after_seq, "limit": limit}
        params.update({k: _param(v) for k, v in filters.items() if v is not None})
        return LedgerPage.model_validate_json(self._get(LEDGER, params).content)

    def checkpoints(
        self,
        after_seq: int = 0,
        *,
        before_seq: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> CheckpointPage:
        params: dict[str, Any] = {"after_seq": after_seq, "limit": limit}
        if before_seq is not None:
            params["before_seq"] = before_seq
        if newest_first:
            params["newest_first"] = "true"
        return CheckpointPage.model_validate_json(
            self._get(f"{LEDGER}/checkpoints", params).content
        )

    def iter_checkpoints(self, after_seq: int = 0) -> Iterator[StoredRecord]:
        while True:
            page = self.checkpoints(after_seq, limit=1000)
            yield from page.checkpoints
            if page.next_after_seq is None:
                return
            after_seq = page.next_after_seq

    def certificates(self) -> list[dict[str, Any]]:
        """The bodies of every ``gateway.key`` record (each verified by whoever uses it)."""
        page = KeyCertificates.model_validate_json(self._get(f"{LEDGER}/keys").content)
        return [json.loads(r.body)["body"] for r in page.certificates]

    def sign_manifest(self, request: ManifestSignRequest) -> SignedManifest:
        """Have the gateway sign a bundle's manifest (``ledger/manifest_sig.py``)."""
        response = self._gateway.send(
            "POST", f"{LEDGER}/manifest-signature", json=request.model_dump(mode="json")
        )
        return SignedManifest.model_validate_json(response.content)

    def signed_start(self, first_seq: int) -> tuple[int, str, dict[str, Any] | None]:
        """Where to start reading so that ``first_seq`` is under a signature: after the last
        checkpoint before it (its signed head links the records to the one before them), or
        at genesis. Returns the first seq to read, the hash it links to, the checkpoint body."""
        page = self.checkpoints(before_seq=first_seq, limit=1, newest_first=True)
        if not page.checkpoints:
            return 1, GENESIS_HASH, None
        body = _checkpoint_body(page.checkpoints[0])
        statement = body["statement"]
        return int(statement["last_seq"]) + 1, str(statement["head_hash"]), body

    def covering_checkpoint(self, last_seq: int) -> int | None:
        """Seq of the first checkpoint record whose signature covers record ``last_seq``."""
        for record in self.iter_checkpoints(last_seq):
            if int(_checkpoint_body(record)["statement"]["last_seq"]) >= last_seq:
                return record.seq
        return None

    def public_key(self) -> PublicKeySet:
        return PublicKeySet.model_validate_json(self._get(f"{LEDGER}/public-key").content)

    def window(self, since: datetime, until: datetime) -> LedgerWindow:
        params = {"since": _param(since), "until": _param(until)}
        return LedgerWindow.model_validate_json(self._get(f"{LEDGER}/window", params).content)

    def stream(
        self, after_seq: int = 0, through_seq: int | None = None
    ) -> Iterator[StreamedRecord]:
        """Every record after ``after_seq`` (through ``through_seq``), as stored.

        Raises GatewayUnavailableError when the stream ends without its trailer (cut short).
        """
        params: dict[str, Any] = {"after_seq": after_seq}
        if through_seq is not None:
            params["through_seq"] = through_seq
        with self._gateway.stream("GET", f"{LEDGER}/stream", params=params) as response:
            rest = b""
            for chunk in response.iter_bytes(1 << 20):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    item = parse_stream_line(line)
                    if isinstance(item, dict):
                        return
                    yield item
        raise GatewayUnavailableError(
            "the ledger stream ended before its last line: the answer was cut short",
            "run the command again; if it persists, see the gateway log",
        )

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        return self._gateway.send("GET", path, params=params, retry=True)


def _param(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _checkpoint_body(record: StoredRecord) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(record.body)["body"]
    return body
