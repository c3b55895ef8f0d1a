"""Map gateway HTTP answers to typed errors (the gateway's own message is kept: it names the fix)."""

from __future__ import annotations

import httpx

from airflow_hoop.errors import (
    BadRequestError,
    GatewayAuthError,
    GatewayUnavailableError,
    HoopError,
    LedgerError,
    PolicyRefusedError,
    VaultError,
)


def error_for(response: httpx.Response) -> HoopError:
    """A typed error for a non-2xx gateway response."""
    raw = _message(response)
    status = response.status_code
    where = f"{response.request.method} {response.request.url.path} -> {status}"
    link, message, fix = _split(raw)
    if status == 401:
        if fix is None and _bearer_is_api_key(response):
            # hoop.dev answers {"message": "access denied"}: name the fix for an API key.
            fix = "check the hpk_ API key in the 'hoop' connection's password (active, not revoked)"
        return GatewayAuthError(
            f"the gateway refused the step's identity ({where}): {message}", fix
        )
    if status == 403:
        return PolicyRefusedError(f"the gateway refused the step ({where}): {message}", fix)
    if status == 503 and link == "ledger":
        return LedgerError(f"the gateway could not write the ledger ({where}): {message}", fix)
    if status == 503 and link == "vault":
        return VaultError(f"the gateway could not use Vault ({where}): {message}", fix)
    if 400 <= status < 500:
        return BadRequestError(f"the gateway rejected the request ({where}): {message}", fix)
    return GatewayUnavailableError(f"the gateway failed ({where}): {message}", fix)


def _split(message: str) -> tuple[str | None, str, str | None]:
    """Split the gateway's ``[link] what. Fix: fix`` so the task's error carries it once."""
    link = None
    if message.startswith("[") and "] " in message:
        link, message = message[1:].split("] ", 1)
    fix = None
    if ". Fix: " in message:
        message, fix = message.rsplit(". Fix: ", 1)
    return link, message, fix


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return str(body)[:500]


def _bearer_is_api_key(response: httpx.Response) -> bool:
    return response.request.headers.get("authorization", "").startswith("Bearer hpk_")
