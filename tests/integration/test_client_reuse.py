"""The auditor's and the approver's clients send through GatewayClient: same bearer, same
typed errors, each naming where its own gateway URL is configured. Real sockets: a closed
port, and the embedded stack's gateway for an answer with an error status."""

from __future__ import annotations

import socket

import anyio
import pytest

from airflow_hoop.client.approver import AsyncApproverClient
from airflow_hoop.client.audit import AuditClient
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.errors import GatewayAuthError, GatewayUnavailableError


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens once the socket is closed


def test_audit_client_unreachable_names_its_fix() -> None:
    with (
        AuditClient(_closed_port_url(), "hpk_x") as client,
        pytest.raises(GatewayUnavailableError) as caught,
    ):
        client.public_key()
    assert "check the gateway URL" in str(caught.value)
    assert "hpk_x" not in str(caught.value)


def test_approver_client_unreachable_names_the_api_server_setting() -> None:
    async def list_reviews() -> None:
        async with AsyncApproverClient(_closed_port_url(), "hpk_y") as client:
            await client.list_reviews()

    with pytest.raises(GatewayUnavailableError) as caught:
        anyio.run(list_reviews)
    assert "[hoop] gateway_url of the API server" in str(caught.value)


def test_both_clients_map_a_refused_key_to_the_same_typed_error(stack: StackInfo) -> None:
    with (
        AuditClient(stack.gateway_url, "hpk_not-a-key") as client,
        pytest.raises(GatewayAuthError) as audit_error,
    ):
        client.ledger_page()

    async def list_reviews() -> None:
        async with AsyncApproverClient(stack.gateway_url, "hpk_not-a-key") as client:
            await client.list_reviews()

    with pytest.raises(GatewayAuthError) as approver_error:
        anyio.run(list_reviews)
    assert "401" in str(audit_error.value) and "401" in str(approver_error.value)
    assert "hpk_not-a-key" not in str(audit_error.value) + str(approver_error.value)
    # The stream path too: an error status is raised before any line is read.
    with AuditClient(stack.gateway_url, "hpk_not-a-key") as client, pytest.raises(GatewayAuthError):
        next(client.stream())
