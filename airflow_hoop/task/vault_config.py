"""How a task reaches Vault: the ``hoop`` connection's Vault settings and the error wrapper
every task-side Vault call goes through.

Shared by the step's login (``vault.py``) and the Kubernetes signer login
(``workload_signer.py``), which ``vault.py`` calls: kept apart so neither imports the other's
module for them.
"""

from __future__ import annotations

from typing import Any, Literal

import hvac.exceptions
import requests
from pydantic import BaseModel, Field, SecretStr

from airflow_hoop.errors import VaultError


class StepVaultConfig(BaseModel):
    """How a task logs in to Vault as its step (from the ``hoop`` connection's extras)."""

    url: str
    namespace: str | None = None
    auth: Literal["jwt", "approle", "token"] = "jwt"
    # Who vouches for the step's claims (auth jwt). airflow_issuer: the identity issuer reads
    # them from Airflow's metadata database after the task proves it is that running task
    # instance. trusted_workers: the worker signs claims it asserts itself (key file or Vault
    # transit): only for deployments that trust every DAG author (docs/identity.md).
    identity: Literal["airflow_issuer", "trusted_workers"] = "airflow_issuer"
    issuer_url: str | None = Field(
        None, description="the identity issuer: <api-server>/hoop/issuer, or the standalone one"
    )
    jwt_mount: str = "jwt"
    jwt_role: str = "airflow-step"
    jwt_issuer: str = "airflow-hoop"
    jwt_audience: str = "openbao"
    jwt_ttl_seconds: int = 300
    workload_key_path: str | None = None
    approle_mount: str = "approle"
    approle_role_id: str | None = None
    approle_secret_id: SecretStr | None = None
    token: SecretStr | None = None
    identity_role: str = "airflow-step"
    timeout_seconds: float = 10.0
    ca_file: str | None = Field(
        None, description="PEM file of the private CA of Vault's certificate (default: public CAs)"
    )
    # trusted_workers only. Kubernetes executor: no key file on the worker; Vault's transit engine signs the step's
    # JWT after the pod logs in with its service-account token (airflow_hoop/task/workload_signer.py).
    workload_signer: Literal["key_file", "vault_transit"] = Field(
        "key_file",
        description="who signs the step's JWT (auth jwt): the key at workload_key_path, or "
        "Vault transit after a signer login",
    )
    signer_auth: Literal["kubernetes", "approle"] = Field(
        "kubernetes", description="the vault_transit signer's login: the pod's token or AppRole"
    )
    kubernetes_role: str | None = Field(None, description="Vault kubernetes auth role")
    kubernetes_mount: str = "kubernetes"
    service_account_token_path: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    transit_mount: str = "transit"
    transit_key: str = Field("airflow-workload", description="Ed25519 key signing step JWTs")


def call_vault(url: str, what: str, fn: Any, *, refused: str, fix: str) -> Any:
    """``fn()``, with hvac's and requests' errors turned into a ``VaultError`` naming the link.

    Only the exception's type and Vault's own error text are kept: a request's URL or body
    (which may hold a token) never reaches the message.
    """
    try:
        return fn()
    except requests.exceptions.RequestException as exc:
        raise VaultError(
            f"cannot reach Vault at {url} during {what} ({type(exc).__name__})",
            "start Vault/OpenBao or correct vault_url in the 'hoop' connection",
        ) from None
    except hvac.exceptions.VaultError as exc:
        reason = "; ".join(str(e) for e in (exc.errors or [])) or type(exc).__name__
        raise VaultError(f"Vault refused {refused}: {reason}", fix) from None


def vault_verify(config: StepVaultConfig) -> str | bool:
    """requests' ``verify`` for the step's Vault: the private CA's file, else the public CAs."""
    return config.ca_file or True
