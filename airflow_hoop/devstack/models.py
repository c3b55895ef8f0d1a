"""What a running embedded stack is: written to ``<run_dir>/stack.json`` by ``stack up``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

STACK_FILE = "stack.json"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file that is 0600 from the moment it exists (it holds secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)  # an older file keeps its mode through O_TRUNC


class StackInfo(BaseModel):
    """Addresses, PIDs and dev-only secrets of one embedded stack (never for production)."""

    run_dir: str
    pg_bin: str
    pg_data: str
    pg_port: int
    pg_socket_dir: str
    pg_superuser: str = "pgsuper"
    warehouse_db: str = "warehouse"
    gateway_db: str = "hoop_gateway"
    bao_addr: str
    bao_root_token: str
    bao_pid: int
    gateway_url: str
    gateway_pid: int | None = None
    gateway_settings_path: str
    gateway_log: str
    workload_key_path: str
    jwt_issuer: str = "airflow-hoop-devstack"
    jwt_role: str = "airflow-step"
    identity_role: str = "airflow-step"
    auditor_api_key: str
    #: The Airflow UI plugin's key (role approver, asserts the Airflow user; channel airflow-ui).
    approver_api_key: str | None = None
    #: A person's key deciding through the gateway API (role approver; channel gateway-api).
    reviewer_api_key: str | None = None
    bao_audit_log: str | None = None
    #: Where the gateway anchors its signed checkpoints (outside its database).
    anchor_dir: str | None = None
    #: The standalone identity issuer (devstack/issuer_process.py) and the metadata database
    #: it attests from: where `airflow dags test` on this stack keeps Airflow's metadata.
    issuer_url: str = ""
    issuer_iss: str = ""
    issuer_pid: int | None = None
    issuer_key_path: str = ""
    issuer_settings_path: str = ""
    issuer_log: str = ""
    airflow_metadata_url: str = ""

    @property
    def pg_json_log(self) -> Path:
        """PostgreSQL's JSON log, pgaudit's entries in it (a stack started with ``pgaudit``)."""
        return Path(self.pg_data) / "log" / "postgresql.json"

    def admin_dsn(self, dbname: str) -> str:
        """Superuser DSN over the unix socket (trust auth; the stack is throwaway)."""
        return (
            f"host={self.pg_socket_dir} port={self.pg_port} "
            f"user={self.pg_superuser} dbname={dbname}"
        )

    def trusted_workers_vault(self) -> dict[str, Any]:
        """``StepVaultConfig`` fields of the "trusted workers" mode: the worker signs its own
        claims with the workload key (gateway-only tests and benches, which run no Airflow)."""
        return {
            "url": self.bao_addr,
            "identity": "trusted_workers",
            "jwt_mount": "jwt-trusted-workers",
            "jwt_role": self.jwt_role,
            "jwt_issuer": self.jwt_issuer,
            "workload_key_path": self.workload_key_path,
            "identity_role": "airflow-step-trusted-workers",
        }

    def airflow_connections(self, issuer_url: str | None = None) -> dict[str, dict[str, Any]]:
        """Airflow connections (conn_id -> JSON) that point a DAG at this stack.

        ``hoop_default`` proves each step through the identity issuer (``issuer_url``: the
        API server's ``/hoop/issuer``; by default the stack's standalone issuer);
        ``hoop_trusted_workers`` is the explicit "trusted workers" mode.
        """
        trusted = {k: v for k, v in self.trusted_workers_vault().items() if k != "url"}
        return {
            "hoop_default": {
                "conn_type": "hoop",
                "host": self.gateway_url,
                "extra": {
                    "vault_url": self.bao_addr,
                    "auth": "jwt",
                    "identity": "airflow_issuer",
                    "issuer_url": issuer_url or self.issuer_url,
                    "jwt_role": self.jwt_role,
                    "identity_role": self.identity_role,
                },
            },
            "hoop_trusted_workers": {
                "conn_type": "hoop",
                "host": self.gateway_url,
                "extra": {"vault_url": self.bao_addr, "auth": "jwt", **trusted},
            },
            "warehouse_via_hoop": {
                "conn_type": "hoop_postgres",
                "schema": "warehouse",
                # Where the gateway's warehouse connection points: OpenLineage names the
                # target database, as the stock PostgresHook would (docs/correlation.md).
                "extra": {
                    "hoop_conn_id": "hoop_default",
                    "lineage_authority": f"127.0.0.1:{self.pg_port}",
                    "lineage_database": self.warehouse_db,
                },
            },
        }

    def airflow_env(self, issuer_url: str | None = None) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables for the connections above."""
        return {
            f"AIRFLOW_CONN_{cid.upper()}": json.dumps(conn)
            for cid, conn in self.airflow_connections(issuer_url).items()
        }

    def save(self) -> Path:
        """Write ``<run_dir>/stack.json``, 0600: it holds the root token and the API keys."""
        path = Path(self.run_dir) / STACK_FILE
        write_private(path, self.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> StackInfo:
        return cls.model_validate_json((Path(run_dir) / STACK_FILE).read_text())
