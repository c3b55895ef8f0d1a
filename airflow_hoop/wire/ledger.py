"""The ledger reads of the gateway API (``/api/airflow-hoop/ledger*``): pages of stored
records, checkpoints and time windows. Read-only: no model here describes a change.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from airflow_hoop.ledger.chain import StoredRecord


class LedgerPage(BaseModel):
    """``GET /api/airflow-hoop/ledger``: records in sequence order, read-only."""

    records: list[StoredRecord]
    next_after_seq: int | None = None


class CheckpointPage(BaseModel):
    """``GET /api/airflow-hoop/ledger/checkpoints``: checkpoint records, by sequence."""

    checkpoints: list[StoredRecord]
    next_after_seq: int | None = None


class KeyCertificates(BaseModel):
    """``GET /api/airflow-hoop/ledger/keys``: every ``gateway.key`` record (the gateway
    processes' certified batch keys), by sequence."""

    certificates: list[StoredRecord]


class LedgerWindow(BaseModel):
    """``GET /api/airflow-hoop/ledger/window``: the records of ``since <= time < until``."""

    since: datetime
    until: datetime
    first_seq: int | None = None
    last_seq: int | None = None
    records: int = 0
    head_seq: int | None = None
