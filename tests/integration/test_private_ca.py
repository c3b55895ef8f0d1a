"""A gateway whose certificate a private CA signs (made here, with cryptography): the task
side, the triggerer's review poll and the plugin's clients trust it through ``ca_file`` only,
never by turning verification off, and without it fail naming the setting that fixes it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gateway_support import CONNECTION, extra_gateway, new_step
from support.tls_support import PrivateCa, private_ca

from airflow_hoop.client.http import GatewayClient
from airflow_hoop.client.tls import CA_FILE_ENV, verifying_context
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.errors import ConfigError, GatewayUnavailableError
from airflow_hoop.task.step_session import GovernedStep, HoopConnectionConfig
from airflow_hoop.task.vault_config import StepVaultConfig
from airflow_hoop.triggers.review import ReviewTrigger


@pytest.fixture(scope="module")
def ca_gateway(
    stack: StackInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, PrivateCa]]:
    ca = private_ca(tmp_path_factory.mktemp("private-ca"))
    tls = {"cert_file": str(ca.cert_file), "key_file": str(ca.key_file)}
    with extra_gateway(stack, "private-ca", tls=tls) as url:
        yield url, ca


def _config(stack: StackInfo, url: str, ca_file: Path | None) -> HoopConnectionConfig:
    # No Airflow here: the "trusted workers" identity (the issuer's path is test_identity.py).
    vault = StepVaultConfig(**stack.trusted_workers_vault())
    return HoopConnectionConfig(
        gateway_url=url, vault=vault, ca_file=None if ca_file is None else str(ca_file)
    )


def test_a_step_trusts_the_gateway_through_the_connections_ca_file(
    stack: StackInfo, ca_gateway: tuple[str, PrivateCa], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = ca_gateway
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    step = GovernedStep(_config(stack, url, ca.ca_file), new_step(task_id="private_ca"))
    try:
        from airflow_hoop.wire.sessions import ExecRequest

        done = step.client.exec(ExecRequest(connection=CONNECTION, script="SELECT 1"))
        step.used_gateway = True
        assert done.output_status == "success", done
    finally:
        step.end()


def test_without_the_ca_the_step_fails_naming_ca_file(
    stack: StackInfo, ca_gateway: tuple[str, PrivateCa], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = ca_gateway
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    with (
        GatewayClient(url, token=lambda: "") as client,
        pytest.raises(GatewayUnavailableError) as err,
    ):
        client.healthz()
    message = str(err.value)
    assert "not trusted" in message and "ca_file" in message, message


def test_hoop_ca_file_lets_the_command_line_trust_it(
    ca_gateway: tuple[str, PrivateCa], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = ca_gateway
    monkeypatch.setenv(CA_FILE_ENV, str(ca.ca_file))
    with GatewayClient(url, token=lambda: "") as client:
        assert client.healthz()


def test_the_review_poll_trusts_only_with_the_ca(
    ca_gateway: tuple[str, PrivateCa], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = ca_gateway
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    poll = f"{url}/api/airflow-hoop/reviews/00000000-0000-0000-0000-000000000000/poll"
    headers = {"Authorization": "Bearer not-a-poll-token"}

    async def poll_once(ca_file: str | None) -> object:
        trigger = ReviewTrigger(url, "00000000-0000-0000-0000-000000000000", "x", ca_file=ca_file)
        assert trigger.serialize()[1]["ca_file"] == ca_file  # survives a triggerer restart
        return await trigger._poll(poll, headers)

    # Untrusted: the poll cannot reach it (logged, still waiting); trusted: the gateway answers
    # (and refuses the made-up token, which ends the wait with an error).
    assert asyncio.run(poll_once(None)) is None
    answered = asyncio.run(poll_once(str(ca.ca_file)))
    assert isinstance(answered, dict) and answered["status"] == "ERROR", answered


def test_an_unusable_ca_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(ConfigError, match=r"no-such-ca\.pem"):
        verifying_context(str(missing))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"garbage\.pem"):
        verifying_context(str(garbage))


def test_the_connections_test_button_reaches_the_gateway_through_its_ca_file(
    stack: StackInfo, ca_gateway: tuple[str, PrivateCa], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.connection import Connection

    from airflow_hoop.hooks.hoop import HoopHook

    url, ca = ca_gateway
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    host, port = url.removeprefix("https://").split(":")
    for conn_id, extra in (
        ("hoop_private_ca", {"vault_url": stack.bao_addr, "ca_file": str(ca.ca_file)}),
        ("hoop_public_cas", {"vault_url": stack.bao_addr}),
    ):
        conn = Connection(conn_id=conn_id, conn_type="hoop", host=host, port=int(port), extra=extra)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn.as_json())
    assert HoopHook("hoop_private_ca").get_config().vault.ca_file == str(ca.ca_file)  # type: ignore[union-attr]
    ok, message = HoopHook("hoop_private_ca").test_connection()
    assert ok, message
    ok, message = HoopHook("hoop_public_cas").test_connection()
    assert not ok and "ca_file" in message, message
