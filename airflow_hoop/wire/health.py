"""Health answers: the gateway's readiness (``GET /api/readyz``) and ``airflow-hoop doctor``,
one line per thing checked, each with the fix when it fails."""

from __future__ import annotations

from pydantic import BaseModel


class CheckResult(BaseModel):
    """One thing a component needs, whether it holds, and the fix when it does not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


class Readiness(BaseModel):
    """Ready when every check passes; a load balancer sends steps to ready gateways only."""

    ready: bool
    instance: str
    checks: list[CheckResult]
