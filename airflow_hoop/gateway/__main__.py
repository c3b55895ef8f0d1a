"""``python -m airflow_hoop.gateway --config FILE``: run the gateway with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from airflow_hoop.errors import ConfigError
from airflow_hoop.gateway.app import create_app
from airflow_hoop.gateway.settings import GatewaySettings


def serve(settings: GatewaySettings) -> None:
    """Serve the gateway until SIGINT/SIGTERM; shutdown revokes every live step credential."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=20,
        # Not uvloop: its subprocesses always fork(), 10 ms per shell command in a process
        # this size; asyncio's use vfork() (see gateway/runners/shell.py).
        loop="asyncio",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_hoop.gateway", description=__doc__)
    parser.add_argument(
        "--config", metavar="FILE", help="gateway settings YAML (default: $HOOP_GATEWAY_CONFIG)"
    )
    args = parser.parse_args(argv)
    try:
        settings = GatewaySettings.load(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
