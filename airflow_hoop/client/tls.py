"""Which certificate authorities a client trusts: the gateway's and Vault's, when they use a
private CA.

A private CA is named by a PEM file: explicitly (the ``hoop`` connection's ``ca_file`` extra,
the plugin's ``[hoop] ca_file``, a trigger's ``ca_file``) or, for the command line, by
``HOOP_CA_FILE``. Without one, the public CAs that httpx ships (certifi). Verification is never
turned off: there is no setting for that.

A context is built once per file and process (loading a CA bundle costs ~40 ms of CPU, and a
task builds a client for each step); an ``SSLContext`` is safe to share between clients.
"""

from __future__ import annotations

import functools
import os
import ssl

import httpx

from airflow_hoop.errors import ConfigError, GatewayUnavailableError

#: The command line's private CA (the plugin's export subprocess gets it from ``[hoop] ca_file``).
CA_FILE_ENV = "HOOP_CA_FILE"


def ca_file_or_env(ca_file: str | None) -> str | None:
    """``ca_file``, else ``$HOOP_CA_FILE``, else None (the public CAs)."""
    return ca_file or os.environ.get(CA_FILE_ENV) or None


def verifying_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying TLS context trusting ``ca_file`` (or ``$HOOP_CA_FILE``, or the public CAs)."""
    return _context(ca_file_or_env(ca_file))


@functools.cache
def _context(ca_file: str | None) -> ssl.SSLContext:
    if ca_file is None:
        return httpx.create_ssl_context()
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"the CA file {ca_file!r} cannot be used ({type(exc).__name__}: {exc.strerror or exc})",
            "point ca_file (or HOOP_CA_FILE) at a readable PEM file of the CA certificates that "
            "sign the gateway's and Vault's certificates",
        ) from None


def untrusted_certificate(exc: BaseException) -> GatewayUnavailableError | None:
    """The error to raise when ``exc`` (an httpx transport error) was a certificate the client
    does not trust, naming the setting that fixes it; None for any other failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return GatewayUnavailableError(
                f"the gateway's TLS certificate is not trusted ({seen.verify_message})",
                "if a private CA signs it, set ca_file on the 'hoop' connection ([hoop] ca_file "
                f"on the API server, ${CA_FILE_ENV} for the command line) to that CA's PEM file",
            )
        seen = seen.__cause__ or seen.__context__
    return None
