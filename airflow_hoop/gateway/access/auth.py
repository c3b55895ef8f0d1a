"""Caller identity: a Vault identity token naming a step, or a hoop-style ``hpk_`` API key.

Identity tokens are JWTs signed by Vault's OIDC identity key; the gateway checks them against
Vault's public JWKS, so it needs no shared secret with Airflow. Messages never echo a token.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any, Literal

import anyio
import httpx
import jwt
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from airflow_hoop.errors import GatewayAuthError, VaultError
from airflow_hoop.gateway.access.verified_tokens import VerifiedTokens
from airflow_hoop.gateway.settings import ApiKey, GatewaySettings
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.wire.userinfo import UserInfo

#: Asymmetric algorithms only: never 'none' nor an HMAC that a public key could forge.
ALGORITHMS = ["EdDSA", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS512"]

#: An unknown kid triggers a JWKS refetch at most this often (no refetch storm on junk kids).
_MIN_REFETCH_SECONDS = 2.0

_API_KEY_PREFIX = "hpk_"
#: The ``attested_by`` of steps whose claims the identity issuer read from Airflow's database.
ISSUER_ATTESTED = "airflow-issuer"


class StepPrincipal(BaseModel):
    """A caller proven by a Vault identity token: one step."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["step"] = "step"
    step: StepRef
    #: The identity token's ``iat``: a step's end refuses the tokens issued before it, while a
    #: task resumed after a deferral (same try, a new Vault login) gets fresh ones.
    issued_at: float = 0.0
    #: The identity token's ``sub``: the Vault entity that logged in as the step. The Vault
    #: token the request names must be this entity's (access/token_liveness.py).
    entity_id: str = ""

    @property
    def name(self) -> str:
        return self.step.key

    def userinfo(self) -> UserInfo:
        return UserInfo(
            email=self.step.key,
            name=self.step.key,
            groups=[],
            role="step",
            is_admin=False,
            type="step",
        )


class ApiKeyPrincipal(BaseModel):
    """A caller holding a configured API key: reads the ledger and sessions, never execs."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["api_key"] = "api_key"
    key_name: str
    role: Literal["auditor", "admin", "approver"]
    groups: tuple[str, ...] = ()
    asserts_users: bool = False
    #: The Airflow user who holds the key (settings ``person``): decisions count as theirs.
    person: str | None = None

    @property
    def name(self) -> str:
        return f"api-key:{self.key_name}"

    def userinfo(self) -> UserInfo:
        return UserInfo(
            email=self.name,
            name=self.key_name,
            groups=list(self.groups),
            role=self.role,
            is_admin=self.role == "admin",
            type="api-key",
            asserts_users=self.asserts_users,
        )


Principal = StepPrincipal | ApiKeyPrincipal


class _StepClaims(BaseModel):
    """The step claims Vault's identity-token template renders (all strings)."""

    model_config = ConfigDict(extra="ignore")

    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int = -1
    triggered_by: str | None = None
    attested_by: str | None = None
    ti_id: str | None = None
    bundle_name: str | None = None
    bundle_version: str | None = None

    @field_validator("dag_id", "task_id", "run_id")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        return value

    @field_validator("map_index", mode="before")
    @classmethod
    def _default_map_index(cls, value: Any) -> Any:
        return -1 if value in (None, "") else value

    @field_validator(
        "triggered_by", "attested_by", "ti_id", "bundle_name", "bundle_version", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value or None


class _Jwks:
    """Vault's JWKS, cached; refetched when stale or when a token names an unknown kid."""

    def __init__(self, url: str, cache_seconds: int, http: httpx.AsyncClient) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self._http = http
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = anyio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK | None:
        now = time.monotonic()
        if now - self._fetched_at > self.cache_seconds:
            await self._refresh(stale_before=now - self.cache_seconds)
        if kid not in self._keys and time.monotonic() - self._fetched_at > _MIN_REFETCH_SECONDS:
            await self._refresh(stale_before=time.monotonic() - _MIN_REFETCH_SECONDS)
        return self._keys.get(kid)

    async def _refresh(self, stale_before: float) -> None:
        async with self._lock:
            if self._fetched_at > stale_before:  # another request refreshed meanwhile
                return
            try:
                resp = await self._http.get(self.url)
                resp.raise_for_status()
                data = resp.json()
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                raise VaultError(
                    f"cannot fetch Vault's identity-token keys from {self.url} "
                    f"({type(exc).__name__}), so no step can be verified",
                    "check that Vault runs and vault.url in the gateway settings",
                ) from None
            keys: dict[str, jwt.PyJWK] = {}
            for entry in data.get("keys", []) if isinstance(data, dict) else []:
                try:
                    jwk = jwt.PyJWK(entry)
                except (jwt.PyJWKError, jwt.InvalidKeyError):
                    continue  # a key type we cannot use cannot have signed a token we accept
                if jwk.key_id:
                    keys[jwk.key_id] = jwk
            self._keys = keys
            self._fetched_at = time.monotonic()


class Authenticator:
    """Turns an ``Authorization`` header into a principal, or raises GatewayAuthError (401)."""

    def __init__(self, settings: GatewaySettings, http: httpx.AsyncClient) -> None:
        vault = settings.vault
        self.issuer = vault.identity_issuer
        self.audience = vault.identity_audience
        self.leeway = settings.token_leeway_seconds
        self.max_lifetime = vault.max_identity_token_seconds
        self.accept_trusted_workers = vault.accept_trusted_workers
        self._api_keys = settings.api_keys
        jwks_url = f"{vault.url.rstrip('/')}/v1/identity/oidc/.well-known/keys"
        self._jwks = _Jwks(jwks_url, vault.jwks_cache_seconds, http)
        # A step's token is verified in full once; later requests only check its expiry.
        self._verified = VerifiedTokens(max_age_seconds=vault.jwks_cache_seconds)

    async def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        if token.startswith(_API_KEY_PREFIX):
            return self._api_key(token)
        step, issued_at, entity_id = await self.verify(token)
        return StepPrincipal(step=step, issued_at=issued_at, entity_id=entity_id)

    def _api_key(self, key: str) -> ApiKeyPrincipal:
        digest = ApiKey.digest(key)
        for candidate in self._api_keys:
            if hmac.compare_digest(candidate.sha256, digest):
                return ApiKeyPrincipal(
                    key_name=candidate.name,
                    role=candidate.role,
                    groups=tuple(candidate.groups),
                    asserts_users=candidate.asserts_users,
                    person=candidate.person,
                )
        raise GatewayAuthError(
            "unknown API key", "use a key listed (by its sha256) in the gateway's api_keys"
        )

    async def verify_identity_token(self, token: str) -> StepRef:
        return (await self.verify(token))[0]

    async def verify(self, token: str) -> tuple[StepRef, float, str]:
        """The step an identity token names, its ``iat`` and its ``sub`` (the Vault entity)."""
        cached = self._verified.lookup(token)
        if cached is not None:
            step, expires_at, issued_at, entity_id = cached
            if expires_at <= time.time() - self.leeway:  # PyJWT's own test of exp
                self._verified.forget(token)
                raise _expired()
            return step, issued_at, entity_id
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise GatewayAuthError(
                "the bearer token is neither an API key nor a JWT",
                "send the step's Vault identity token as 'Authorization: Bearer <token>'",
            ) from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise GatewayAuthError(
                "the identity token names no signing key (kid)",
                "send a Vault identity token (identity/oidc/token/<role>)",
            )
        key = await self._jwks.key(kid)
        if key is None:
            raise GatewayAuthError(
                "the identity token was signed by a key that Vault does not publish",
                f"get the token from the Vault at {self.issuer} that the gateway trusts",
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": ["exp", "iat", "iss", "aud", "sub"],
                    "verify_signature": True,
                },
            )
        except jwt.ExpiredSignatureError:
            raise _expired() from None
        except jwt.InvalidAudienceError:
            raise GatewayAuthError(
                f"identity token has the wrong audience (expected {self.audience!r})",
                "set the Vault identity role's client_id to the gateway's identity_audience",
            ) from None
        except jwt.InvalidIssuerError:
            raise GatewayAuthError(
                f"identity token has the wrong issuer (expected {self.issuer!r})",
                "point the task and the gateway at the same Vault (vault.identity_issuer)",
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise GatewayAuthError(
                f"identity token lacks the {exc.claim!r} claim",
                "use a Vault identity token (it always carries exp, iat, iss, aud, sub)",
            ) from None
        except jwt.ImmatureSignatureError:
            raise GatewayAuthError(
                "identity token is not valid yet: Vault's clock is ahead of the gateway's by "
                f"more than the allowed skew ({self.leeway}s)",
                "synchronise the clocks of Vault and the gateway (NTP), or raise "
                "token_leeway_seconds (docs/faults.md)",
            ) from None
        except jwt.InvalidTokenError as exc:
            raise GatewayAuthError(
                f"identity token rejected ({type(exc).__name__})",
                "send an unmodified Vault identity token",
            ) from None
        lifetime = float(claims["exp"]) - float(claims["iat"])
        if lifetime > self.max_lifetime:
            # Revoking a step's Vault token does not unsign its identity tokens: their
            # lifetime is how long one outlives a revocation the gateway is not told of.
            raise GatewayAuthError(
                f"identity token lives {lifetime:.0f}s, longer than the gateway accepts "
                f"({self.max_lifetime}s)",
                "lower the Vault identity role's ttl (5m recommended), or raise "
                "vault.max_identity_token_seconds in the gateway settings",
            )
        step = _step_from(claims)
        if step.attested_by != ISSUER_ATTESTED and not self.accept_trusted_workers:
            # Claims a worker signed itself: any DAG author could have written them.
            raise GatewayAuthError(
                f"the step's identity is attested by {step.attested_by or 'nobody'!r}, not by "
                "Airflow's identity issuer, and this gateway does not trust workers",
                "log the step in through the identity issuer (identity airflow_issuer), or "
                "set vault.accept_trusted_workers in the gateway settings",
            )
        entity_id = str(claims["sub"])
        self._verified.remember(
            token, step, float(claims["exp"]), float(claims["iat"]), entity_id=entity_id
        )
        return step, float(claims["iat"]), entity_id


def _expired() -> GatewayAuthError:
    return GatewayAuthError(
        "identity token expired (or the gateway's clock is ahead of Vault's by more than "
        "token_leeway_seconds)",
        "fetch a fresh identity token from Vault (the task's broker refreshes it); if fresh "
        "tokens fail too, synchronise the clocks (NTP) or raise token_leeway_seconds "
        "(docs/faults.md)",
    )


def _step_from(claims: dict[str, Any]) -> StepRef:
    try:
        parsed = _StepClaims.model_validate(claims)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        raise GatewayAuthError(
            f"identity token does not name a step (missing or invalid claims: {fields})",
            "render dag_id, task_id, run_id, try_number, map_index in the Vault identity "
            "role's template from the step's login metadata",
        ) from None
    return StepRef(**parsed.model_dump())


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise GatewayAuthError(
            "no bearer token", "send 'Authorization: Bearer <the step's Vault identity token>'"
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise GatewayAuthError(
            "the Authorization header is not 'Bearer <token>'",
            "send 'Authorization: Bearer <the step's Vault identity token>'",
        )
    return token
