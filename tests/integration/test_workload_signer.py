"""The Kubernetes-executor login without a key file (airflow_hoop/task/workload_signer.py), against
the real OpenBao of the embedded stack: a signer login whose policy may only sign with one
transit key, Vault signs the step's JWT, the step logs in with it and runs through the gateway.

The signer login here is AppRole: Kubernetes auth needs a Kubernetes API server to review the
pod's token, which CI does not have; its configuration and the missing-token failure are
tested below without one.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from support.gateway_support import CONNECTION, auth_headers, new_step, step_rows

from airflow_hoop.devstack import vault_setup
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.errors import ConfigError, VaultError
from airflow_hoop.task.vault import StepVaultSession
from airflow_hoop.task.vault_config import StepVaultConfig
from airflow_hoop.task.workload_signer import transit_public_pem


def _trusted(stack: StackInfo) -> dict[str, Any]:
    """The trusted-workers mode without the key file: the transit signer replaces it."""
    return {k: v for k, v in stack.trusted_workers_vault().items() if k != "workload_key_path"}


def _signer(stack: StackInfo, *, may_sign: bool = True) -> dict[str, Any]:
    """A transit key trusted by the stack's JWT auth, and an AppRole that may sign with it."""
    root = vault_setup.vault_client(stack.bao_addr, stack.bao_root_token)
    suffix = uuid.uuid4().hex[:8]
    key = f"airflow-workload-{suffix}"
    root.secrets.transit.create_key(name=key, key_type="ed25519", mount_point="transit")
    # Trust the transit key's public key next to the workload issuer's (as deploy/vault does).
    config = root.read(f"auth/{vault_setup.TRUSTED_JWT_MOUNT}/config")["data"]
    pubkeys = list(config["jwt_validation_pubkeys"]) + transit_public_pem(root, key)
    root.write_data(
        f"auth/{vault_setup.TRUSTED_JWT_MOUNT}/config",
        data={"jwt_validation_pubkeys": pubkeys, "bound_issuer": config["bound_issuer"]},
    )
    policy = f"signer-{suffix}"
    path = key if may_sign else f"{key}-other"
    root.sys.create_or_update_policy(
        policy, f'path "transit/sign/{path}" {{ capabilities = ["update"] }}\n'
    )
    mount = f"approle-signer-{suffix}"
    root.sys.enable_auth_method("approle", path=mount)
    root.auth.approle.create_or_update_approle(
        "task-pods", token_policies=[policy], token_ttl="2m", mount_point=mount
    )
    role_id = root.auth.approle.read_role_id("task-pods", mount_point=mount)["data"]["role_id"]
    secret = root.auth.approle.generate_secret_id("task-pods", mount_point=mount)["data"]
    return {
        "workload_signer": "vault_transit",
        "signer_auth": "approle",
        "approle_mount": mount,
        "approle_role_id": role_id,
        "approle_secret_id": SecretStr(secret["secret_id"]),
        "transit_key": key,
    }


def test_a_step_signed_by_vault_transit_runs_as_itself(stack: StackInfo) -> None:
    signer = _signer(stack)
    step = new_step(task_id="signed_by_transit")
    # No workload_key_path: this worker has no key file, only the signer login.
    config = StepVaultConfig(**_trusted(stack), **signer)
    session = StepVaultSession(config, step)
    headers = auth_headers(session.identity_token(), session.accessor())
    try:
        with httpx.Client(base_url=stack.gateway_url, trust_env=False, timeout=60) as http:
            response = http.post(
                "/api/sessions",
                json={"connection": CONNECTION, "script": "SELECT session_user"},
                headers=headers,
            )
            assert response.status_code == 200, response.text
            assert "af_" in response.json()["output"]  # its own dynamic user
            session_id = response.json()["session_id"]
            http.post("/api/airflow-hoop/steps/end", headers=headers)
    finally:
        assert session.revoke()
    intent = next(
        r for r in step_rows(stack) if session_id in r.body and '"session.intent"' in r.body
    )
    assert '"task_id":"signed_by_transit"' in intent.body  # the step the gateway was shown


def test_a_signer_that_may_not_use_the_key_fails_closed_naming_vault(stack: StackInfo) -> None:
    signer = _signer(stack, may_sign=False)
    config = StepVaultConfig(**_trusted(stack), **signer)
    session = StepVaultSession(config, new_step(task_id="no_sign_right"))
    with pytest.raises(VaultError) as caught:
        session.login()
    message = str(caught.value)
    assert message.startswith("[vault]") and "transit signature" in message and "Fix:" in message
    assert signer["approle_secret_id"].get_secret_value() not in message


def test_kubernetes_signer_needs_a_role_and_the_pods_token(tmp_path: Path) -> None:
    base = {
        "url": "http://127.0.0.1:9",
        "identity": "trusted_workers",
        "workload_signer": "vault_transit",
    }
    session = StepVaultSession(StepVaultConfig(**base), new_step())
    with pytest.raises(ConfigError, match="kubernetes_role"):
        session.login()
    missing = tmp_path / "token"
    config = StepVaultConfig(
        **base, kubernetes_role="airflow-task", service_account_token_path=str(missing)
    )
    with pytest.raises(ConfigError) as caught:
        StepVaultSession(config, new_step()).login()
    assert str(missing) in str(caught.value) and "service-account token" in str(caught.value)
