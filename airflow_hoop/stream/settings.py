"""The stream's settings: one model for the CLI (``--config``) and the gateway-side option."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airflow_hoop.errors import ConfigError
from airflow_hoop.ledger.checkpoint import PublicKeySet
from airflow_hoop.stream.cursor import CursorFile
from airflow_hoop.stream.formats import EventFormat, OcsfFormat
from airflow_hoop.stream.pump import Delivered, StreamPump
from airflow_hoop.stream.sinks import Sink, StdoutSink


class StreamSettings(BaseModel):
    """Follow the ledger and deliver each record, at least once and in order, to one sink.

    In the gateway's settings file under ``siem_stream:`` (off unless ``enabled: true``); for
    ``airflow-hoop audit stream --config FILE`` the same keys at the top level.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="the gateway-side stream runs (gateway only)")
    format: EventFormat = Field(
        default_factory=OcsfFormat, description="'ocsf' (OCSF 1.1 events) or 'jsonl' (raw)"
    )
    sink: Sink = Field(default_factory=StdoutSink, description="where to deliver (by kind)")
    cursor_file: Path = Field(description="the durable cursor (seq and hash last delivered)")
    batch_size: int = Field(1000, ge=1, le=100_000, description="records per delivery")
    poll_seconds: float = Field(0.5, gt=0, le=60, description="wait at the head of the ledger")
    retry_seconds: float = Field(5.0, gt=0, description="wait after a failed delivery (gateway)")
    signed_only: bool = Field(
        False,
        description="hold each record until a checkpoint whose signature verifies covers it "
        "(the CLI needs the public key; the gateway reads it from its Vault)",
    )

    @field_validator("format", mode="before")
    @classmethod
    def _format_by_name(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    def pump(
        self, on_delivered: Delivered | None = None, keys: PublicKeySet | None = None
    ) -> StreamPump:
        """A pump at this stream's cursor (loaded now); ``keys`` verify checkpoints."""
        return StreamPump(
            self.format,
            self.sink,
            CursorFile(self.cursor_file),
            on_delivered,
            keys=keys,
            signed_only=self.signed_only,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], **overrides: Any) -> StreamSettings:
        """From a YAML file; ``overrides`` (the CLI's options) win over the file."""
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read stream settings file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"stream settings file {path} is not a mapping of settings")
        return cls.build(data | overrides)

    @classmethod
    def build(cls, data: dict[str, Any]) -> StreamSettings:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(
                f"invalid stream settings ({problems})", "correct the named options or keys"
            ) from None
