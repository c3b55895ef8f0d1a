"""``python -m airflow_hoop.gateway --config FILE``: run the gateway with uvicorn."""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI

from airflow_hoop.errors import ConfigError
from airflow_hoop.gateway.app import create_app
from airflow_hoop.gateway.observability.logs import configure_logging
from airflow_hoop.gateway.settings import GatewaySettings


def app_from_environment() -> FastAPI:
    """The app of one worker process (uvicorn's factory when ``workers > 1``).

    Each worker loads the settings itself, from the file named by ``HOOP_GATEWAY_CONFIG`` and
    the ``HOOP_GATEWAY_*`` variables it inherited: the same inputs the parent validated.
    """
    settings = GatewaySettings.load()
    configure_logging(settings.observability)
    return create_app(settings)


def serve(settings: GatewaySettings, *, workers: int = 1, config: str | None = None) -> None:
    """Serve the gateway until SIGINT/SIGTERM; shutdown revokes every live step credential.

    SIGHUP reloads the connections of ``config`` (``settings_reload.py``); with ``workers > 1``
    uvicorn's supervisor restarts the workers instead, each loading the file anew.

    With ``workers > 1`` uvicorn runs that many processes on one socket; they share nothing but
    the database (the ledger is appended under an advisory lock), so each needs ``config``.
    """
    configure_logging(settings.observability)
    app: FastAPI | str
    extra: dict[str, Any] = {}
    if workers > 1:
        if config:
            os.environ["HOOP_GATEWAY_CONFIG"] = str(config)
        # An import string (not __name__: under `python -m` that is "__main__").
        app = "airflow_hoop.gateway.__main__:app_from_environment"
        extra = {"factory": True, "workers": workers}
    else:
        app = create_app(settings, config)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        **_tls_options(settings),
        log_level=settings.observability.log_level.lower(),
        log_config=None,  # the root logger, as configure_logging set it (text or JSON)
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=20,
        # Not uvloop: its subprocesses always fork(), 10 ms per shell command in a process
        # this size; asyncio's use vfork() (see gateway/execution/runners/shell.py).
        loop="asyncio",
        **extra,
    )


def _tls_options(settings: GatewaySettings) -> dict[str, Any]:
    """uvicorn's ssl_* arguments from ``settings.tls`` (none: plain HTTP)."""
    tls = settings.tls
    if tls is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": tls.cert_file, "ssl_keyfile": tls.key_file}
    if tls.key_password is not None:
        options["ssl_keyfile_password"] = tls.key_password.get_secret_value()
    if tls.client_ca_file:
        options["ssl_ca_certs"] = tls.client_ca_file
        options["ssl_cert_reqs"] = (
            ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
        )
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_hoop.gateway", description=__doc__)
    parser.add_argument(
        "--config", metavar="FILE", help="gateway settings YAML (default: $HOOP_GATEWAY_CONFIG)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes on one socket (default 1)"
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        settings = GatewaySettings.load(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    serve(settings, workers=args.workers, config=args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
