"""ObservabilitySettings: how the gateway logs and what it exposes to monitoring."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ObservabilitySettings(BaseModel):
    """Logs, metrics and readiness (docs/operations.md).

    ``log_format: json`` writes one JSON object per line (time, level, logger, message, the
    gateway process's instance id) for a log shipper; ``text`` is for a terminal.
    ``/metrics`` serves Prometheus' text format; with ``metrics_token`` set, a scrape must send
    ``Authorization: Bearer <token>``. Metrics carry counts and durations only: no statement,
    identity or secret is ever a label.
    """

    model_config = ConfigDict(extra="forbid")

    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    metrics: bool = Field(True, description="serve /metrics (Prometheus text format)")
    metrics_token: SecretStr | None = Field(
        None, description="bearer token a scrape must present; none: /metrics is open"
    )
    ready_max_unsigned_seconds: float = Field(
        300.0,
        gt=0,
        description="/api/readyz fails when records have waited this long for a checkpoint "
        "(the signer is stuck: Vault's transit key unreachable or revoked)",
    )
