"""What one delivered line is: an OCSF event, or the ledger's own stream line (raw JSONL).

Each format is a small model with one ``encode``; the stream's options and the gateway's
settings name it by ``kind``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airflow_hoop.stream.chain import RawRecord
from airflow_hoop.stream.ocsf import EVENT, CheckpointRef
from airflow_hoop.stream.ocsf_mapping import RecordView, other, to_ocsf

_ENCODE = msgspec.json.Encoder().encode


class OcsfFormat(BaseModel):
    """One OCSF 1.1 event per record (docs/signals.md has the mapping table)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["ocsf"] = "ocsf"
    #: validate every event against the pydantic models before delivery (~25 µs a record)
    validate_events: bool = False

    def encode(
        self, raw: RawRecord, record: dict[str, Any], checkpoint: CheckpointRef | None
    ) -> bytes:
        view = RecordView(raw.seq, raw.hash, record, checkpoint)
        event = to_ocsf(view)
        if self.validate_events:
            try:
                EVENT.validate_python(event)
            except ValidationError:
                # A mapping mistake for this record: deliver it unclassified, never drop it.
                event = other(view)
                EVENT.validate_python(event)
        return _ENCODE(event)


class JsonlFormat(BaseModel):
    """The ledger stream's own line: ``{"seq":N,"hash":"…","record":<stored bytes>}``.

    The record's bytes are passed through untouched, so the lines verify with
    ``airflow-hoop audit verify`` tools exactly as the gateway's stream does.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["jsonl"] = "jsonl"

    def encode(
        self, raw: RawRecord, record: dict[str, Any], checkpoint: CheckpointRef | None
    ) -> bytes:
        return b'{"seq":%d,"hash":"%s","record":%s}' % (raw.seq, raw.hash.encode(), raw.data)


EventFormat = Annotated[OcsfFormat | JsonlFormat, Field(discriminator="kind")]
