"""``python -m airflow_hoop.plugins.issuer --config issuer.yaml``: the standalone issuer.

For deployments (and ``airflow dags test``, ``airflow-hoop demo``) without an API server: it
runs beside the metadata database, as a user whose files task code cannot read.
"""

from __future__ import annotations

import argparse

import uvicorn

from airflow_hoop.errors import ConfigError
from airflow_hoop.plugins.issuer.app import build_issuer_app
from airflow_hoop.plugins.issuer.settings import IssuerSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m airflow_hoop.plugins.issuer")
    parser.add_argument("--config", required=True, help="the issuer's settings (YAML)")
    args = parser.parse_args(argv)
    settings = IssuerSettings.load(args.config)
    if not settings.metadata_db_url:
        raise ConfigError(
            "the standalone issuer needs metadata_db_url in its settings",
            "set it to Airflow's [database] sql_alchemy_conn",
        )
    app = build_issuer_app(settings, settings.metadata_db_url)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
