"""Gateway-side Vault: mint a step's dynamic database user, and revoke it.

The dynamic user's name comes from Vault's ``username_template``, which only sees the token's
display name. So the gateway creates a short-lived CHILD token whose display name is the step
key and reads the credential with it: the database user then names the step. The child is a
child of the gateway token, so revoking the gateway token revokes every step credential.

hvac is synchronous; every call runs in a worker thread.
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import hvac
import hvac.exceptions
import requests
from pydantic import BaseModel, SecretStr

from airflow_hoop.errors import ConfigError, VaultError
from airflow_hoop.gateway.settings import GatewayVault, PostgresConnection
from airflow_hoop.ledger.checkpoint import split_vault_signature
from airflow_hoop.ledger.records import StepRef

T = TypeVar("T")

# Vault error texts can quote a creation statement; never let a password through.
_PASSWORD_LITERAL = re.compile(r"(?i)(password\s*)'[^']*'")


class StepCredential(BaseModel):
    """A dynamic database user of one step on one connection, and the token that owns it."""

    connection: str
    vault_role: str
    lease_id: str
    username: str
    password: SecretStr
    ttl: int
    child_token: SecretStr
    issued_at: float
    expires_at: float

    def __repr__(self) -> str:  # never print the password or the token, even by accident
        return f"StepCredential(connection={self.connection!r}, username={self.username!r})"


class TokenLookup(BaseModel):
    """What Vault says of a live token, looked up by its accessor (nothing secret)."""

    entity_id: str
    #: The token's login metadata (JWT auth: the step claims mapped by the role).
    meta: dict[str, str] = {}
    #: Seconds the token has left (0: no expiry of its own).
    ttl: int = 0


class GatewayVaultClient:
    """The gateway's own Vault client (its token may create step tokens and revoke leases)."""

    def __init__(self, settings: GatewayVault, *, timeout: float = 10.0) -> None:
        self.settings = settings
        self._timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # a proxy from the environment must not see tokens
        self._client = self._new_client(None)

    def _new_client(self, token: str | None) -> hvac.Client:
        return hvac.Client(
            url=self.settings.url,
            token=token,
            namespace=self.settings.namespace,
            session=self._session,
            timeout=self._timeout,  # type: ignore[arg-type]
        )

    # -- lifecycle ---------------------------------------------------------------------------
    async def login(self) -> None:
        """Obtain the gateway token (token auth: as configured; AppRole: log in)."""
        await self._call("gateway login", None, self._login)

    def _login(self) -> None:
        auth = self.settings.auth
        if auth.method == "token":
            assert auth.token is not None  # settings validation guarantees it
            self._client.token = auth.token.get_secret_value()
            return
        if auth.method == "kubernetes":
            self._kubernetes_login()
            return
        assert auth.role_id is not None and auth.secret_id is not None
        resp = self._client.auth.approle.login(
            role_id=auth.role_id,
            secret_id=auth.secret_id.get_secret_value(),
            mount_point=auth.mount,
            use_token=True,
        )
        if not resp or "auth" not in resp:
            raise VaultError("the AppRole login returned no token")

    def _kubernetes_login(self) -> None:
        """Kubernetes auth: the pod's service-account token, read afresh (kubelet rotates it)."""
        auth = self.settings.auth
        assert auth.kubernetes_role is not None  # settings validation guarantees it
        try:
            jwt = Path(auth.service_account_token_path).read_text().strip()
        except OSError as exc:
            raise VaultError(
                f"cannot read the service-account token {auth.service_account_token_path}: "
                f"{exc.strerror}",
                "mount the pod's service-account token or set "
                "vault.auth.service_account_token_path",
            ) from None
        resp = self._client.auth.kubernetes.login(
            role=auth.kubernetes_role, jwt=jwt, mount_point=auth.kubernetes_mount, use_token=True
        )
        if not resp or "auth" not in resp:
            raise VaultError("the Kubernetes login returned no token")

    def close(self) -> None:
        self._session.close()

    # -- step credentials --------------------------------------------------------------------
    async def issue_step_credential(
        self, step: StepRef, connection: PostgresConnection, *, read_only: bool = False
    ) -> StepCredential:
        """Create the step's child token, then read ``<mount>/creds/<role>`` with it.

        ``read_only``: the connection's ``vault_read_role`` (the step's READ user), else its
        ``vault_role`` (the writer).
        """
        role = connection.vault_read_role if read_only else connection.vault_role
        if role is None:  # the settings refuse this; never fall back to the writer
            raise ConfigError(
                f"connection {connection.name!r} has no vault_read_role", "set vault_read_role"
            )
        return await self._call(
            "issuing a database credential", step, self._issue, step, connection, role
        )

    def _issue(self, step: StepRef, connection: PostgresConnection, role: str) -> StepCredential:
        cfg = self.settings
        created = self._client.auth.token.create(
            policies=cfg.step_token_policies,
            display_name=step.key,
            ttl=f"{cfg.step_token_ttl_seconds}s",
            renewable=False,
            meta={"step": step.key, "connection": connection.name},
        )
        child_token = created["auth"]["client_token"]
        child = self._new_client(child_token)
        try:
            resp = child.secrets.database.generate_credentials(
                name=role, mount_point=cfg.database_mount
            )
        except BaseException:
            # The child token would otherwise linger until its TTL.
            _quietly(child.auth.token.revoke_self)
            raise
        data = resp["data"]
        now = time.time()
        ttl = int(resp.get("lease_duration") or cfg.step_token_ttl_seconds)
        # A lease cannot outlive the token that holds it.
        ttl = min(ttl, cfg.step_token_ttl_seconds)
        return StepCredential(
            connection=connection.name,
            vault_role=role,
            lease_id=resp["lease_id"],
            username=data["username"],
            password=SecretStr(data["password"]),
            ttl=ttl,
            child_token=SecretStr(child_token),
            issued_at=now,
            expires_at=now + ttl,
        )

    async def revoke(self, cred: StepCredential, step: StepRef | None = None) -> None:
        """Revoke the lease (synchronous: the role is gone on return), then the child token."""
        await self._call("revoking a database credential", step, self._revoke, cred)

    def _revoke(self, cred: StepCredential) -> None:
        try:
            self._client.sys.revoke_lease(lease_id=cred.lease_id)
        finally:
            # Even if the lease revoke failed, revoking the child also revokes its leases
            # (asynchronously), so the user does not survive either way.
            child = self._new_client(cred.child_token.get_secret_value())
            _quietly(child.auth.token.revoke_self)

    async def revoke_lease(self, lease_id: str) -> None:
        """Revoke a lease by id with the gateway's own token (the recovery sweep: the step's
        child token died with the process that held it). Revoking an expired lease succeeds."""
        await self._call(
            "revoking a database credential left by a dead gateway",
            None,
            lambda: self._client.sys.revoke_lease(lease_id=lease_id),
        )

    # -- the steps' own tokens (access/token_liveness.py) ------------------------------------
    async def lookup_accessor(self, accessor: str) -> TokenLookup | None:
        """The live token ``accessor`` names, or None when Vault knows none (revoked, expired,
        never issued). Needs ``auth/token/lookup-accessor`` (update) in the gateway policy."""
        return await self._call(
            "looking up a step's Vault token by its accessor", None, self._lookup, accessor
        )

    def _lookup(self, accessor: str) -> TokenLookup | None:
        try:
            resp = self._client.auth.token.lookup_accessor(accessor)
        except hvac.exceptions.InvalidRequest:  # 400 "invalid accessor": no such live token
            return None
        data = resp["data"]
        return TokenLookup(
            entity_id=str(data.get("entity_id") or ""),
            meta={str(k): str(v) for k, v in (data.get("meta") or {}).items()},
            ttl=int(data.get("ttl") or 0),
        )

    # -- readiness (routes/health.py) --------------------------------------------------------
    async def own_token_ttl(self) -> int:
        """Seconds the gateway's own token has left (0: no expiry); VaultError when Vault is
        unreachable or the token is gone. ``auth/token/lookup-self`` is in every policy."""
        return await self._call("looking up the gateway's own token", None, self._ttl_self)

    def _ttl_self(self) -> int:
        return int(self._client.auth.token.lookup_self()["data"].get("ttl") or 0)

    # -- checkpoint signing (transit) ---------------------------------------------------------
    async def sign_digest(self, digest: bytes) -> tuple[int, str]:
        """Sign 32 bytes with the transit checkpoint key: (key version, base64 signature)."""
        return await self._call("signing a ledger checkpoint", None, self._sign, digest)

    def _sign(self, digest: bytes) -> tuple[int, str]:
        cfg = self.settings
        resp = self._client.secrets.transit.sign_data(
            name=cfg.checkpoint_key,
            hash_input=base64.b64encode(digest).decode("ascii"),
            mount_point=cfg.transit_mount,
        )
        return split_vault_signature(resp["data"]["signature"])

    async def checkpoint_public_keys(self) -> dict[int, str]:
        """Every version of the checkpoint key's public half (base64 of the raw 32 bytes)."""
        return await self._call("reading the checkpoint public key", None, self._public_keys)

    def _public_keys(self) -> dict[int, str]:
        cfg = self.settings
        resp = self._client.secrets.transit.read_key(
            name=cfg.checkpoint_key, mount_point=cfg.transit_mount
        )
        keys = resp["data"]["keys"]
        return {int(version): str(entry["public_key"]) for version, entry in keys.items()}

    # -- masking keys (KV v2) ----------------------------------------------------------------
    async def read_masking_key(self, name: str) -> tuple[str, int]:
        """The ``key`` field of masking key ``name`` and its KV version (never logged)."""
        return await self._call(f"reading masking key {name!r}", None, self._masking_key, name)

    def _masking_key(self, name: str) -> tuple[str, int]:
        cfg = self.settings
        resp = self._client.secrets.kv.v2.read_secret_version(
            path=f"{cfg.masking_key_path}/{name}",
            mount_point=cfg.masking_kv_mount,
            raise_on_deleted_version=True,
        )
        data = resp["data"]
        return str(data["data"]["key"]), int(data["metadata"]["version"])

    # -- plumbing ----------------------------------------------------------------------------
    async def _call(self, what: str, step: StepRef | None, fn: Any, *args: Any) -> Any:
        url = self.settings.url
        whose = f" for step {step.key}" if step else ""
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        except requests.exceptions.RequestException as exc:
            raise VaultError(
                f"cannot reach Vault at {url} while {what}{whose} ({type(exc).__name__}); "
                "nothing was executed",
                "start Vault/OpenBao or correct vault.url in the gateway settings",
            ) from None
        except hvac.exceptions.VaultError as exc:
            reason = "; ".join(str(e) for e in (exc.errors or [])) or type(exc).__name__
            reason = _PASSWORD_LITERAL.sub(r"\1'***'", reason)[:300]
            raise VaultError(
                f"Vault refused {what}{whose}: {reason}",
                "check the gateway token's policies (auth/token/create, "
                "auth/token/lookup-accessor, the database role's creds path, sys/leases/revoke) "
                "and the database role",
            ) from None


def _quietly(fn: Any) -> None:
    with contextlib.suppress(requests.exceptions.RequestException, hvac.exceptions.VaultError):
        fn()
