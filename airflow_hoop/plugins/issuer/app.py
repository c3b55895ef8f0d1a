"""The issuer's ASGI app: OpenID discovery, JWKS, and ``POST /token`` for running steps.

A token is minted only when all of these hold, in this order (the first that fails is the
403's reason, and the refusal is recorded in ``hoop_issuer_events``):

1. the audience is one the issuer serves;
2. the task instance named by the request exists and is ``running``;
3. its rendered fields, which Airflow's supervisor wrote under that task instance's id,
   hold ``commitment(ti_id, secret)``;
4. the secret was not presented before (each commitment is single-use: recording the token
   inserts it into a unique column, so a replay fails there).

Every claim comes from the database row, never from the request: the request's dag, run, task
and map index only say which row to check.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from typing import Any

import jwt
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from airflow_hoop.ledger.records import StepRef
from airflow_hoop.plugins.issuer.keys import IssuerKey, load_key
from airflow_hoop.plugins.issuer.settings import IssuerSettings
from airflow_hoop.plugins.issuer.store import IssuerStore, RunningStep, SpentCommitmentError
from airflow_hoop.wire.identity import (
    COMMITMENT_FIELD,
    IssuerRefusal,
    StepTokenRequest,
    StepTokenResponse,
    commitment,
)

log = logging.getLogger("airflow_hoop.issuer")

#: The ``attested_by`` claim of issuer tokens; OpenBao's role binds it.
ATTESTED_BY = "airflow-issuer"
JWKS_PATH = "/.well-known/jwks.json"
#: What the issuer copies from the database row into the step (and so into the claims).
_STEP_FIELDS = (
    "dag_id",
    "task_id",
    "run_id",
    "try_number",
    "map_index",
    "triggered_by",
    "ti_id",
    "bundle_name",
    "bundle_version",
)


class Refused(Exception):
    """A request the issuer will not serve: the reason goes to the caller and the record."""

    def __init__(self, reason: str, fix: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix
        self.status = status


class StepIssuer:
    """Checks a request against the metadata database and signs the step's claims."""

    def __init__(self, settings: IssuerSettings, key: IssuerKey, store: IssuerStore) -> None:
        self.settings = settings
        self.key = key
        self.store = store

    def mint(self, request: StepTokenRequest) -> StepTokenResponse:
        where = {
            "dag_id": request.dag_id,
            "task_id": request.task_id,
            "run_id": request.run_id,
            "map_index": request.map_index,
            "audience": request.audience,
        }
        try:
            step, spent = self._check(request)
        except Refused as refusal:
            self.store.record_refused(refusal.reason, **where)
            log.warning("issuer refused %s: %s", where, refusal.reason)
            raise
        jti = uuid.uuid4().hex
        now = int(time.time())
        expires = now + self.settings.ttl_seconds
        try:
            self.store.record_issued(
                spent,
                reason="minted",
                ti_id=step.ti_id,
                try_number=step.try_number,
                jti=jti,
                **where,
            )
        except SpentCommitmentError:
            reason = "this secret was already presented once (a replay)"
            self.store.record_refused(reason, ti_id=step.ti_id, **where)
            raise Refused(reason, "commit to a new secret for a new token") from None
        token = jwt.encode(
            {
                **self.claims(step),
                "aud": request.audience,
                "iat": now,
                "nbf": now - 5,
                "exp": expires,
                "jti": jti,
            },
            self.key.private,
            algorithm="EdDSA",
            headers={"kid": self.key.kid},
        )
        return StepTokenResponse(token=token, expires_at=expires, jti=jti)

    def _check(self, request: StepTokenRequest) -> tuple[RunningStep, str]:
        if request.audience not in self.settings.audiences:
            raise Refused(
                f"audience {request.audience!r} is not one this issuer serves",
                f"ask for one of {self.settings.audiences}",
            )
        ti = self.store.task_instance(
            request.dag_id, request.run_id, request.task_id, request.map_index
        )
        if ti is None:
            raise Refused("no such task instance", "name the running task instance itself")
        # A replay passes these checks while its task runs; the unique commitment column of
        # the issuer's record refuses it (mint), durably and across replicas.
        spent = commitment(ti.ti_id, request.secret)
        if ti.state != "running":
            raise Refused(
                f"the task instance is {ti.state or 'not started'}, not running",
                "only a running task instance gets a token; a new try gets its own",
            )
        held = (ti.rendered_fields or {}).get(COMMITMENT_FIELD)
        if not isinstance(held, str) or not held:
            raise Refused(
                "the task instance's rendered fields hold no step commitment",
                "use a hoop operator, or the hook inside the task (it commits first)",
            )
        if not hmac.compare_digest(held, spent):
            raise Refused(
                "the secret does not match the commitment in the task instance's rendered "
                "fields (the commitment alone, as the UI and REST API show it, is not enough)",
                "request the token from inside the task that committed",
            )
        return ti, spent

    def claims(self, step: RunningStep) -> dict[str, Any]:
        fields = {name: getattr(step, name) for name in _STEP_FIELDS}
        ref = StepRef(**fields, attested_by=ATTESTED_BY)
        claims: dict[str, Any] = {**ref.jwt_claims(), "iss": self.settings.issuer}
        if step.hostname:
            claims["hostname"] = step.hostname
        return claims

    def discovery(self, base_url: str) -> dict[str, Any]:
        return {
            "issuer": self.settings.issuer,
            "jwks_uri": base_url.rstrip("/") + JWKS_PATH,
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "claims_supported": [
                "sub",
                "dag_id",
                "task_id",
                "run_id",
                "try_number",
                "map_index",
                "ti_id",
                "bundle_name",
                "bundle_version",
                "hostname",
                "triggered_by",
                "attested_by",
            ],
        }


def build_issuer_app(settings: IssuerSettings, metadata_db_url: str) -> FastAPI:
    """The issuer's app, for the API server's plugin or the standalone process."""
    issuer = StepIssuer(settings, load_key(settings.key_path), IssuerStore(metadata_db_url))
    app = FastAPI(title="airflow-hoop issuer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.issuer = issuer

    @app.get("/.well-known/openid-configuration")
    def discovery() -> dict[str, Any]:
        return issuer.discovery(settings.issuer)

    @app.get(JWKS_PATH)
    def jwks() -> dict[str, Any]:
        return {"keys": [issuer.key.jwk]}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/token", response_model=StepTokenResponse)
    def token(body: StepTokenRequest) -> Any:
        try:
            return issuer.mint(body)
        except Refused as refusal:
            return JSONResponse(
                IssuerRefusal(reason=refusal.reason, fix=refusal.fix).model_dump(),
                status_code=refusal.status,
            )

    return app
