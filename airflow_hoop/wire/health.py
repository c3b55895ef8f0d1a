"""The gateway's readiness answer (``GET /api/readyz``): one line per dependency."""

from __future__ import annotations

from pydantic import BaseModel


class ReadinessCheck(BaseModel):
    """One dependency the gateway needs to serve steps, and the fix when it fails."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


class Readiness(BaseModel):
    """Ready when every check passes; a load balancer sends steps to ready gateways only."""

    ready: bool
    instance: str
    checks: list[ReadinessCheck]
