"""Health routes: liveness (``/api/healthz``, hoop's), readiness (``/api/readyz``),
"who am I" (``/api/userinfo``, hoop's) and Prometheus metrics (``/metrics``).

Liveness says the process answers; readiness says it can serve a step now: its database
answers, its own Vault token is valid, and the checkpoint signer keeps up (records that wait
longer than ``observability.ready_max_unsigned_seconds`` for a signature mean transit is
unreachable or the key was revoked, and a reviewer would find them unsigned). Neither needs a
credential: they say nothing about steps or statements.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from airflow_hoop.errors import HoopError
from airflow_hoop.gateway.db.store import instance_id
from airflow_hoop.gateway.db.vitals import LedgerVitals, read_vitals
from airflow_hoop.gateway.observability.metrics import CONTENT_TYPE, GatewayMetrics
from airflow_hoop.gateway.routes.deps import Caller, Svc
from airflow_hoop.wire.health import CheckResult, Readiness
from airflow_hoop.wire.userinfo import UserInfo

log = logging.getLogger(__name__)

router = APIRouter()


@router.get("/api/healthz")
async def healthz() -> dict[str, str]:
    return {"liveness": "OK"}


@router.get("/api/readyz", response_model=Readiness)
async def readyz(svc: Svc) -> JSONResponse:
    vitals, database = await _database_check(svc)
    checks = [database, await _vault_check(svc), _signer_check(svc, vitals)]
    ready = all(c.ok for c in checks)
    for failed in (c for c in checks if not c.ok):
        log.warning("not ready: %s: %s; fix: %s", failed.name, failed.detail, failed.fix)
    body = Readiness(ready=ready, instance=instance_id(), checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/api/userinfo", response_model=UserInfo)
async def userinfo(caller: Caller) -> UserInfo:
    """hoop's "who am I": the caller as this gateway takes it (no secret in the answer)."""
    return caller.userinfo()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, svc: Svc) -> Response:
    settings = svc.settings.observability
    if not settings.metrics:
        raise HTTPException(404, detail="metrics are off (observability.metrics)")
    token = settings.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not secrets.compare_digest(sent.encode(), expected.encode()):
            raise HTTPException(401, detail="metrics need the bearer token (metrics_token)")
    gauges: GatewayMetrics = request.app.state.metrics
    vitals, _ = await _database_check(svc)
    if vitals is not None:
        gauges.observe_vitals(vitals)
    gauges.database_up.set(1 if vitals is not None else 0)
    return Response(gauges.render(), media_type=CONTENT_TYPE)


async def _database_check(svc: Svc) -> tuple[LedgerVitals | None, CheckResult]:
    try:
        async with svc.store.connection("read the ledger's vitals") as conn:
            vitals = await read_vitals(conn)
    except HoopError as exc:
        return None, CheckResult(name="database", ok=False, detail=exc.what, fix=exc.fix)
    return vitals, CheckResult(
        name="database", ok=True, detail=f"ledger head at seq {vitals.head_seq}"
    )


async def _vault_check(svc: Svc) -> CheckResult:
    try:
        ttl = await svc.registry.vault.own_token_ttl()
    except HoopError as exc:
        return CheckResult(name="vault", ok=False, detail=exc.what, fix=exc.fix)
    left = "no expiry" if ttl == 0 else f"{ttl} s left"
    return CheckResult(name="vault", ok=True, detail=f"gateway token valid ({left})")


def _signer_check(svc: Svc, vitals: LedgerVitals | None) -> CheckResult:
    settings = svc.settings
    if not settings.checkpoints.enabled:
        return CheckResult(name="checkpoints", ok=True, detail="checkpoints are off")
    if vitals is None:
        return CheckResult(
            name="checkpoints", ok=False, detail="unknown: the database did not answer"
        )
    waited = vitals.unsigned_wait_seconds
    limit = settings.observability.ready_max_unsigned_seconds
    if waited > limit:
        return CheckResult(
            name="checkpoints",
            ok=False,
            detail=f"the oldest unsigned record has waited {waited:.0f} s (limit {limit:.0f} s)",
            fix="check the gateway log for checkpoint errors: Vault's transit key "
            f"{settings.vault.checkpoint_key!r} must be reachable and usable by the gateway",
        )
    return CheckResult(
        name="checkpoints",
        ok=True,
        detail=f"{vitals.unsigned_records} records past the newest checkpoint, "
        f"oldest waited {waited:.0f} s",
    )
