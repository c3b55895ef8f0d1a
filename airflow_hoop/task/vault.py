"""Task-side Vault broker: log in as the step, get an identity token, revoke at the end.

The task never asks Vault for database credentials: it proves *who* it is, and the gateway
mints what the step may use. Every login passes ``use_token=False`` so that a client's token
is never silently replaced.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import hvac
import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pydantic import BaseModel, Field, SecretStr

from airflow_hoop.errors import ConfigError, IdentityError
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.task.issuer_client import issuer_jwt
from airflow_hoop.task.vault_config import StepVaultConfig, call_vault, vault_verify
from airflow_hoop.task.workload_signer import transit_signed_jwt

#: Refresh an identity token this long before it expires.
_REFRESH_MARGIN_S = 30.0


class IdentityToken(BaseModel):
    """A Vault-signed identity token (JWT) naming the step; the gateway's bearer."""

    token: SecretStr
    expires_at: float = Field(description="unix time")

    def fresh(self) -> bool:
        return time.time() < self.expires_at - _REFRESH_MARGIN_S


def _algorithm_for(pem: bytes) -> str:
    """EdDSA for Ed25519 keys, RS256 for RSA: the two Vault JWT auth accepts by default."""
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    raise ConfigError("the workload issuer key must be Ed25519 or RSA", "generate an Ed25519 key")


class StepVaultSession:
    """One step's Vault login. Thread-safe; ``revoke()`` is idempotent."""

    def __init__(self, config: StepVaultConfig, step: StepRef) -> None:
        self.config = config
        self.step = step
        self._lock = threading.Lock()
        self._token: SecretStr | None = None
        #: The step's Vault token's accessor: every gateway request names it, and the gateway
        #: honours the step's identity token only while that token lives (not a credential).
        self._accessor: str | None = None
        self._identity: IdentityToken | None = None
        self._revoked = False
        #: An identity token was ever issued: its step must be ended on the gateway, or the
        #: token would be honoured there until its exp (task/step_session.py).
        self.issued_identity = False
        session = requests.Session()
        session.trust_env = False
        self._client = hvac.Client(
            url=config.url,
            namespace=config.namespace,
            session=session,
            timeout=config.timeout_seconds,  # type: ignore[arg-type]
            verify=vault_verify(config),
        )

    # -- login -----------------------------------------------------------------------------
    def login(self) -> None:
        """Log in as the step (no-op when already logged in)."""
        with self._lock:
            if self._revoked:
                raise IdentityError(
                    "this step's Vault token was already revoked", "start a new task try"
                )
            if self._token is None:
                token, accessor = self._call("login", self._login)
                self._token = SecretStr(token)
                self._client.token = self._token.get_secret_value()
                self._accessor = accessor or self._call("token lookup", self._own_accessor)

    def accessor(self) -> str | None:
        """The accessor of the step's Vault token, which names it to the gateway; None before
        the login and after the revoke (a step's end needs none)."""
        return self._accessor

    def _own_accessor(self) -> str:
        return str(self._client.auth.token.lookup_self()["data"]["accessor"])

    def _login(self) -> tuple[str, str | None]:
        cfg = self.config
        if cfg.auth == "token":
            if not cfg.token:
                raise ConfigError(
                    "auth=token needs a Vault token in the 'hoop' connection's password"
                )
            return cfg.token.get_secret_value(), None
        if cfg.auth == "approle":
            if not (cfg.approle_role_id and cfg.approle_secret_id):
                raise ConfigError(
                    "auth=approle needs approle_role_id (extra) and the secret_id (password)"
                )
            resp = self._client.auth.approle.login(
                role_id=cfg.approle_role_id,
                secret_id=cfg.approle_secret_id.get_secret_value(),
                mount_point=cfg.approle_mount,
                use_token=False,
            )
        else:
            resp = self._client.auth.jwt.jwt_login(
                role=cfg.jwt_role, jwt=self._workload_jwt(), path=cfg.jwt_mount, use_token=False
            )
        return str(resp["auth"]["client_token"]), str(resp["auth"]["accessor"])

    def _workload_jwt(self) -> str:
        """The step's JWT: from the identity issuer, or (trusted workers) signed here."""
        if self.config.identity == "airflow_issuer":
            return issuer_jwt(self.config, self.step)
        if self.config.workload_signer == "vault_transit":
            return transit_signed_jwt(self.config, self._workload_claims())
        path = self.config.workload_key_path
        if not path:
            raise ConfigError(
                "auth=jwt needs workload_key_path in the 'hoop' connection's extras",
                "point it at the workload issuer's private key (PEM)",
            )
        try:
            key = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the workload issuer key {path}: {exc.strerror}"
            ) from None
        return jwt.encode(self._workload_claims(), key, algorithm=_algorithm_for(key))

    def _workload_claims(self) -> dict[str, Any]:
        now = int(time.time())
        return {
            **self.step.jwt_claims(),
            # Said by the worker, and not believed: the trusted-workers identity role sets it.
            "attested_by": "trusted-workers",
            "iss": self.config.jwt_issuer,
            "aud": self.config.jwt_audience,
            "iat": now,
            "nbf": now - 5,
            "exp": now + self.config.jwt_ttl_seconds,
            "jti": uuid.uuid4().hex,
        }

    # -- identity token ----------------------------------------------------------------------
    def identity_token(self) -> str:
        """A Vault identity token naming this step, refreshed shortly before it expires."""
        self.login()
        with self._lock:
            if self._identity is None or not self._identity.fresh():
                self._identity = self._call("identity token", self._fetch_identity)
                self.issued_identity = True
            return self._identity.token.get_secret_value()

    def _fetch_identity(self) -> IdentityToken:
        resp = self._client.secrets.identity.generate_signed_id_token(
            name=self.config.identity_role
        )
        data = resp["data"]
        return IdentityToken(token=SecretStr(data["token"]), expires_at=time.time() + data["ttl"])

    # -- revoke ------------------------------------------------------------------------------
    def revoke(self) -> bool:
        """Revoke the step's Vault token. Returns True when a token was revoked."""
        with self._lock:
            if self._revoked or self._token is None or self.config.auth == "token":
                self._revoked = True
                return False
            self._revoked = True
            self._identity = None
            try:
                self._call("revoke", self._client.auth.token.revoke_self)
            finally:
                self._token = None
                self._accessor = None
            return True

    def _call(self, what: str, fn: Any) -> Any:
        return call_vault(
            self.config.url,
            what,
            fn,
            refused=f"{what} for step {self.step.key}",
            fix="check the Vault auth role, its bound claims and the workload issuer key",
        )
