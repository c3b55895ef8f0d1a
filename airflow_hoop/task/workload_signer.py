"""Sign a step's workload JWT with a Vault transit key, after logging in as the pod.

For the Kubernetes executor: no workload-issuer key on the worker. The task pod logs in to
Vault with its own service-account token (``kubernetes`` auth; ``approle`` elsewhere), whose
policy may only sign with one transit key; it has Vault sign the step's JWT (Ed25519, so
Vault's JWT auth verifies it with the transit key's public key), revokes that login at once,
and the step then logs in with the JWT exactly as with a key file (``vault.py``).

What it proves: Vault's audit log ties every signed step JWT to the pod's service account
that asked for it, and the key never leaves Vault. The step claims are still asserted by the
pod (docs/security.md).
"""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from airflow_hoop.errors import ConfigError
from airflow_hoop.ledger.checkpoint import split_vault_signature
from airflow_hoop.task.vault_config import StepVaultConfig, call_vault, vault_verify

_HEADER = {"alg": "EdDSA", "typ": "JWT"}


def transit_signed_jwt(config: StepVaultConfig, claims: dict[str, Any]) -> str:
    """The step's JWT, signed by ``transit/sign/<transit_key>`` under a short signer login."""
    session = requests.Session()
    session.trust_env = False  # a proxy from the environment must not see tokens
    client = hvac.Client(
        url=config.url,
        namespace=config.namespace,
        session=session,
        timeout=config.timeout_seconds,  # type: ignore[arg-type]
        verify=vault_verify(config),
    )
    try:
        client.token = _signer_login(client, config)
        try:
            return _sign(client, config, claims)
        finally:
            # The signer token is needed for one signature only.
            # It expires at its TTL anyway: the step must not fail for this.
            with contextlib.suppress(
                requests.exceptions.RequestException, hvac.exceptions.VaultError
            ):
                client.auth.token.revoke_self()
    finally:
        session.close()


def _signer_login(client: hvac.Client, config: StepVaultConfig) -> str:
    if config.signer_auth == "kubernetes":
        if not config.kubernetes_role:
            raise ConfigError(
                "workload_signer vault_transit with signer_auth kubernetes needs kubernetes_role",
                "set kubernetes_role in the 'hoop' connection's extras",
            )
        path = config.service_account_token_path
        try:
            jwt = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the pod's service-account token {path}: {exc.strerror}",
                "run the task in a pod with a (projected) service-account token, or set "
                "service_account_token_path",
            ) from None
        login = lambda: client.auth.kubernetes.login(  # noqa: E731
            role=config.kubernetes_role,
            jwt=jwt,
            mount_point=config.kubernetes_mount,
            use_token=False,
        )
    else:
        if not (config.approle_role_id and config.approle_secret_id):
            raise ConfigError(
                "signer_auth approle needs approle_role_id (extra) and the secret_id (password)"
            )
        secret_id = config.approle_secret_id.get_secret_value()
        login = lambda: client.auth.approle.login(  # noqa: E731
            role_id=config.approle_role_id,
            secret_id=secret_id,
            mount_point=config.approle_mount,
            use_token=False,
        )
    resp = _call(config, f"{config.signer_auth} login of the workload signer", login)
    return str(resp["auth"]["client_token"])


def _sign(client: hvac.Client, config: StepVaultConfig, claims: dict[str, Any]) -> str:
    signing_input = (
        f"{_b64url(json.dumps(_HEADER).encode())}.{_b64url(json.dumps(claims).encode())}"
    )
    resp = _call(
        config,
        f"transit signature with key {config.transit_key}",
        lambda: client.secrets.transit.sign_data(
            name=config.transit_key,
            hash_input=base64.b64encode(signing_input.encode()).decode(),
            mount_point=config.transit_mount,
        ),
    )
    _, signature = split_vault_signature(resp["data"]["signature"])
    return f"{signing_input}.{_b64url(base64.b64decode(signature))}"


def transit_public_pem(client: hvac.Client, key: str, mount: str = "transit") -> list[str]:
    """PEM public keys of every version of an Ed25519 transit key: for ``auth/jwt/config``'s
    ``jwt_validation_pubkeys`` (setup, not the task's path)."""
    keys = client.secrets.transit.read_key(name=key, mount_point=mount)["data"]["keys"]
    pems = []
    for version in sorted(keys, key=int):
        raw = base64.b64decode(keys[version]["public_key"])
        public = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        pems.append(pem.decode())
    return pems


def _call(config: StepVaultConfig, what: str, fn: Any) -> Any:
    return call_vault(
        config.url,
        f"the {what}",
        fn,
        refused=f"the {what}",
        fix="check the signer's Vault role and that its policy may use transit/sign/<key>",
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
