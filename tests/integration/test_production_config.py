"""Production configuration of the gateway: AppRole login (real OpenBao), TLS listener (real
uvicorn with a certificate made here), Kubernetes auth (validation and its failure path only:
no Kubernetes API server here to review a service-account token)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.gateway_support import CONNECTION, extra_gateway, new_step, step_client

from airflow_hoop.devstack import vault_setup
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.errors import ConfigError, VaultError
from airflow_hoop.gateway.__main__ import _tls_options
from airflow_hoop.gateway.config_report import describe
from airflow_hoop.gateway.settings import GatewaySettings, GatewayVault
from airflow_hoop.gateway.vault import GatewayVaultClient


def _base_settings(**overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "database_dsn": "host=db dbname=hoop_gateway user=hoop_gateway",
        "vault": {
            "url": "https://vault.internal:8200",
            "auth": {"method": "approle", "role_id": "gw", "secret_id": "s"},
            "identity_issuer": "https://vault.internal:8200/v1/identity/oidc",
        },
    }
    settings.update(overrides)
    return settings


def _load(tmp_path: Path, settings: dict[str, Any]) -> GatewaySettings:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(settings))
    return GatewaySettings.load(path)


@pytest.fixture(autouse=True)
def _no_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.upper().startswith("HOOP_GATEWAY_"):
            monkeypatch.delenv(key)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files), valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hoop-gateway-test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "gateway.crt", tmp_path / "gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _approle(stack: StackInfo) -> tuple[str, str, str]:
    """An AppRole mount of its own with the gateway's policies: (mount, role_id, secret_id)."""
    root = vault_setup.vault_client(stack.bao_addr, stack.bao_root_token)
    mount = f"approle-gw-{uuid.uuid4().hex[:8]}"
    root.sys.enable_auth_method("approle", path=mount)
    root.auth.approle.create_or_update_approle(
        "hoop-gateway",
        token_policies=[vault_setup.GATEWAY_POLICY, vault_setup.STEP_CREDS_POLICY],
        token_ttl="1h",
        mount_point=mount,
    )
    role_id = root.auth.approle.read_role_id("hoop-gateway", mount_point=mount)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("hoop-gateway", mount_point=mount)["data"][
        "secret_id"
    ]
    return mount, role_id, secret_id


def test_gateway_with_approle_login_serves_a_step_over_https(
    stack: StackInfo, tmp_path: Path
) -> None:
    """A second gateway process: AppRole instead of a token, HTTPS with our certificate."""
    mount, role_id, secret_id = _approle(stack)
    cert, key = _self_signed(tmp_path)
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    vault = {
        **settings["vault"],
        "auth": {"method": "approle", "mount": mount, "role_id": role_id, "secret_id": secret_id},
    }
    tls = {"cert_file": str(cert), "key_file": str(key)}
    with (
        extra_gateway(stack, "approle-tls", vault=vault, tls=tls) as url,
        step_client(stack, new_step(task_id="tls")) as step,
    ):
        assert url.startswith("https://")
        # Plain HTTP on the TLS port is not served.
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https://", "http://") + "/api/healthz", timeout=5)
        # A client that does not trust the certificate is refused by its own TLS check.
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/api/healthz", timeout=5, trust_env=False)
        with httpx.Client(
            base_url=url,
            verify=ssl.create_default_context(cafile=str(cert)),
            trust_env=False,
            timeout=60,
        ) as http:
            response = http.post(
                "/api/sessions",
                json={"connection": CONNECTION, "script": "SELECT session_user"},
                headers=step.headers(),
            )
            assert response.status_code == 200, response.text
            # The step's own dynamic user, minted with the AppRole login's token.
            assert "af_" in response.json()["output"]
            http.post("/api/airflow-hoop/steps/end", headers=step.headers())


def test_approle_with_a_wrong_secret_id_fails_closed_naming_vault(stack: StackInfo) -> None:
    mount, role_id, _ = _approle(stack)
    raw = yaml.safe_load(Path(stack.gateway_settings_path).read_text())["vault"]
    auth = {"method": "approle", "mount": mount, "role_id": role_id, "secret_id": "wrong"}
    vault = GatewayVault.model_validate({**raw, "auth": auth})
    client = GatewayVaultClient(vault)
    with pytest.raises(VaultError) as caught:
        anyio.run(client.login)
    client.close()
    assert str(caught.value).startswith("[vault]")
    assert "wrong" not in str(caught.value)


def test_kubernetes_auth_needs_a_role(tmp_path: Path) -> None:
    auth = {"method": "kubernetes"}
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _base_settings(vault={**_base_settings()["vault"], "auth": auth}))
    assert "vault.auth" in str(caught.value) and "kubernetes_role" in str(caught.value)
    auth = {"method": "kubernetes", "kubernetes_role": "hoop-gateway"}
    settings = _load(tmp_path, _base_settings(vault={**_base_settings()["vault"], "auth": auth}))
    assert settings.vault.auth.kubernetes_mount == "kubernetes"
    assert settings.vault.auth.service_account_token_path.endswith("serviceaccount/token")
    assert "gateway logs in with kubernetes" in "\n".join(describe(settings))


def test_kubernetes_login_without_a_token_file_names_the_file(tmp_path: Path) -> None:
    """Outside a pod the token file is absent: the login fails before any request to Vault."""
    missing = tmp_path / "no-such-token"
    auth = {
        "method": "kubernetes",
        "kubernetes_role": "hoop-gateway",
        "service_account_token_path": str(missing),
    }
    settings = _load(
        tmp_path,
        _base_settings(
            vault={**_base_settings()["vault"], "url": "http://127.0.0.1:9", "auth": auth}
        ),
    )
    client = GatewayVaultClient(settings.vault)
    with pytest.raises(VaultError) as caught:
        anyio.run(client.login)
    client.close()
    assert str(missing) in str(caught.value) and "Fix:" in str(caught.value)


def test_tls_files_are_checked_when_the_settings_load(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    tls = {"cert_file": str(tmp_path / "missing.crt"), "key_file": str(key)}
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _base_settings(tls=tls))
    assert "tls.cert_file" in str(caught.value) and "missing.crt" in str(caught.value)
    tls = {"cert_file": str(cert), "key_file": str(key), "require_client_cert": True}
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _base_settings(tls=tls))
    assert "client_ca_file" in str(caught.value)
    tls = {"cert_file": str(cert), "key_file": str(key), "client_ca_file": str(cert)}
    tls["require_client_cert"] = True  # type: ignore[assignment]
    settings = _load(tmp_path, _base_settings(tls=tls))
    options = _tls_options(settings)
    assert options["ssl_certfile"] == str(cert) and options["ssl_ca_certs"] == str(cert)
    assert "HTTPS with" in describe(settings)[0] and "required" in describe(settings)[0]


def test_plain_http_and_token_auth_are_reported_by_check_config(tmp_path: Path) -> None:
    vault = {**_base_settings()["vault"], "auth": {"method": "token", "token": "t"}}
    lines = describe(_load(tmp_path, _base_settings(vault=vault)))
    assert "plain HTTP" in lines[0]
    assert any(line.startswith("warning: vault.auth.method 'token'") for line in lines)
    assert _tls_options(_load(tmp_path, _base_settings())) == {}
