"""Probes of the services a component talks to: the gateway (TLS, liveness, readiness) and
Vault (seal status), with the clock difference each one's ``Date`` header shows.

Clocks matter: step tokens live minutes and the gateway allows ``token_leeway_seconds``; a
host whose clock is off by more than ``MAX_SKEW_SECONDS`` gets tokens refused as expired or
not yet valid.
"""

from __future__ import annotations

import email.utils
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from airflow_hoop.client.tls import untrusted_certificate, verifying_context
from airflow_hoop.errors import HoopError
from airflow_hoop.wire.health import CheckResult, Readiness

MAX_SKEW_SECONDS = 30.0
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def failed(name: str, exc: HoopError) -> CheckResult:
    return CheckResult(name=name, ok=False, detail=exc.what, fix=exc.fix)


def _client(url: str, ca_file: str | None) -> httpx.Client:
    return httpx.Client(
        base_url=url.rstrip("/"), verify=verifying_context(ca_file), trust_env=False, timeout=10
    )


def _unreachable(name: str, url: str, exc: httpx.TransportError, fix: str) -> CheckResult:
    untrusted = untrusted_certificate(exc)
    if untrusted is not None:
        return failed(name, untrusted)
    return CheckResult(
        name=name, ok=False, detail=f"cannot reach {url} ({type(exc).__name__})", fix=fix
    )


def transport_check(name: str, url: str) -> CheckResult:
    """HTTPS, or plain HTTP on loopback only (the embedded stack): tokens travel on it."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return CheckResult(name=name, ok=True, detail=f"{url}: HTTPS, certificate verified")
    if parts.hostname in _LOOPBACK:
        return CheckResult(name=name, ok=True, detail=f"{url}: plain HTTP on loopback")
    return CheckResult(
        name=name,
        ok=False,
        detail=f"{url}: plain HTTP to another host: step tokens would cross the network in clear",
        fix="serve it over HTTPS (the gateway's tls settings; Vault's listener) and use https://",
    )


def clock_check(name: str, response: httpx.Response) -> CheckResult:
    header = response.headers.get("date")
    if not header:
        return CheckResult(name=name, ok=True, detail="no Date header: clock not compared")
    skew = (datetime.now(timezone.utc) - email.utils.parsedate_to_datetime(header)).total_seconds()
    if abs(skew) > MAX_SKEW_SECONDS:
        return CheckResult(
            name=name,
            ok=False,
            detail=f"this host's clock differs by {skew:+.0f} s",
            fix="synchronise clocks (NTP, chrony or systemd-timesyncd) on this host and the server",
        )
    return CheckResult(name=name, ok=True, detail=f"within {abs(skew):.0f} s")


def gateway_probe(url: str, ca_file: str | None) -> tuple[list[CheckResult], httpx.Client | None]:
    """Transport, reachability and readiness of the gateway; the open client when reachable."""
    results = [transport_check("gateway transport", url)]
    http = _client(url, ca_file)
    try:
        response = http.get("/api/readyz")
    except httpx.TransportError as exc:
        http.close()
        fix = "start the gateway, or correct its URL (the 'hoop' connection's host, [hoop] gateway_url)"
        return [*results, _unreachable("gateway reachable", url, exc, fix)], None
    results.append(CheckResult(name="gateway reachable", ok=True, detail=f"{url} answered"))
    results.append(_readiness(response))
    results.append(clock_check("clock vs gateway", response))
    return results, http


def _readiness(response: httpx.Response) -> CheckResult:
    if response.status_code == 404:
        return CheckResult(
            name="gateway ready", ok=True, detail="no /api/readyz (hoop.dev or an older gateway)"
        )
    try:
        readiness = Readiness.model_validate_json(response.content)
    except ValidationError:
        return CheckResult(
            name="gateway ready",
            ok=False,
            detail=f"/api/readyz answered {response.status_code} without a readiness report",
            fix="check that the URL is the airflow-hoop gateway, not a proxy's error page",
        )
    failing = [c for c in readiness.checks if not c.ok]
    if not failing:
        return CheckResult(name="gateway ready", ok=True, detail=f"ready ({readiness.instance})")
    return CheckResult(
        name="gateway ready",
        ok=False,
        detail="; ".join(f"{c.name}: {c.detail}" for c in failing),
        fix=failing[0].fix or "see the gateway log",
    )


def vault_probe(url: str, ca_file: str | None) -> list[CheckResult]:
    """Vault's transport, reachability and seal status (``sys/health`` needs no token)."""
    results = [transport_check("vault transport", url)]
    with _client(url, ca_file) as http:
        try:
            response = http.get("/v1/sys/health", params={"standbyok": "true"})
        except httpx.TransportError as exc:
            fix = "start Vault/OpenBao, or correct vault_url (and ca_file) on the connection"
            return [*results, _unreachable("vault reachable", url, exc, fix)]
    if response.status_code in (200, 429, 473):
        results.append(CheckResult(name="vault reachable", ok=True, detail=f"{url}: unsealed"))
    else:
        state = {501: "not initialised", 503: "sealed"}.get(response.status_code, "unhealthy")
        results.append(
            CheckResult(
                name="vault reachable",
                ok=False,
                detail=f"{url}: {state} (HTTP {response.status_code})",
                fix="initialise and unseal Vault/OpenBao (bao operator unseal)",
            )
        )
    results.append(clock_check("clock vs vault", response))
    return results


def issuer_probe(url: str, ca_file: str | None, audience: str) -> list[CheckResult]:
    """The identity issuer's discovery document and keys, as OpenBao will fetch them."""
    name = "identity issuer"
    discovery: httpx.Response | None
    jwks: httpx.Response | None
    with _client(url, ca_file) as http:
        try:
            discovery = http.get("/.well-known/openid-configuration")
            jwks = http.get(str(discovery.json()["jwks_uri"]))  # absolute, as OpenBao fetches it
        except httpx.TransportError as exc:
            fix = "start the issuer (the API server's plugin or the standalone one), or correct issuer_url"
            return [_unreachable(name, url, exc, fix)]
        except (ValueError, KeyError, httpx.InvalidURL, httpx.UnsupportedProtocol):
            discovery = jwks = None
    keys = jwks.json().get("keys", []) if jwks is not None and jwks.status_code == 200 else []
    if discovery is None or discovery.status_code != 200 or not keys:
        return [
            CheckResult(
                name=name,
                ok=False,
                detail=f"{url}: no OpenID discovery document or no signing key",
                fix="check issuer_url names the issuer (<api-server>/hoop/issuer) and that the "
                "API server has AIRFLOW_HOOP_ISSUER_SETTINGS",
            )
        ]
    issuer = discovery.json().get("issuer")
    return [
        transport_check("issuer transport", url),
        CheckResult(
            name=name,
            ok=True,
            detail=f"{url}: issuer {issuer}, {len(keys)} key(s); tokens for audience {audience}",
        ),
    ]
