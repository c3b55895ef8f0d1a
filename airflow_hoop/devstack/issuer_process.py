"""The embedded stack's standalone identity issuer: its key, settings and process.

``airflow dags test`` and ``airflow-hoop demo`` run without an API server, so the stack runs
the issuer on its own beside Airflow's metadata database (SQLite in the run directory unless
the caller gives Airflow another one). An API server started by ``AirflowServices`` mounts
the same issuer (same key, same ``iss``) and reads its own metadata database.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from pathlib import Path

import yaml

from airflow_hoop.devstack import openbao, ports
from airflow_hoop.devstack.models import StackInfo, write_private
from airflow_hoop.errors import ConfigError
from airflow_hoop.plugins.issuer.keys import write_key
from airflow_hoop.plugins.issuer.settings import IssuerSettings

ISSUER_MODULE = "airflow_hoop.plugins.issuer"
ISSUER_KEY_FILE = "issuer-key.pem"
ISSUER_CONFIG_FILE = "issuer.yaml"
ISSUER_LOG_FILE = "issuer.log"
ISSUER_AUDIENCE = "openbao"
_HEALTH_TIMEOUT_S = 30.0


def prepare(info: StackInfo, port: int) -> None:
    """Key (0600) and settings (0600) of the standalone issuer; fills ``info``'s issuer fields."""
    run_dir = Path(info.run_dir)
    info.issuer_url = f"http://{ports.LOOPBACK}:{port}"
    info.issuer_iss = info.issuer_url
    info.issuer_key_path = str(run_dir / ISSUER_KEY_FILE)
    info.issuer_settings_path = str(run_dir / ISSUER_CONFIG_FILE)
    info.issuer_log = str(run_dir / ISSUER_LOG_FILE)
    info.airflow_metadata_url = f"sqlite:///{run_dir / 'airflow.db'}"
    write_key(info.issuer_key_path)
    write_settings(
        Path(info.issuer_settings_path),
        info,
        metadata_db_url=info.airflow_metadata_url,
        port=port,
    )


def write_settings(
    path: Path, info: StackInfo, *, metadata_db_url: str | None, port: int = 0
) -> Path:
    """An issuer settings file for this stack's key and ``iss`` (0600: it names the key).

    ``metadata_db_url`` None: the API server's own metadata database.
    """
    settings = IssuerSettings(
        key_path=info.issuer_key_path,
        issuer=info.issuer_iss,
        audiences=[ISSUER_AUDIENCE],
        metadata_db_url=metadata_db_url,
        host=ports.LOOPBACK,
        port=port,
    )
    write_private(path, yaml.safe_dump(settings.model_dump(), sort_keys=False))
    return path


def jwks_url(info: StackInfo) -> str:
    return f"{info.issuer_url}/.well-known/jwks.json"


def start(info: StackInfo) -> subprocess.Popen[bytes]:
    """Start the standalone issuer and wait until it serves its JWKS."""
    cmd = [sys.executable, "-m", ISSUER_MODULE, "--config", info.issuer_settings_path]
    proc = openbao.spawn_service(cmd, Path(info.issuer_log), info.run_dir)
    info.issuer_pid = proc.pid
    deadline = time.monotonic() + _HEALTH_TIMEOUT_S
    host, port = info.issuer_url.split("://", 1)[1].rsplit(":", 1)
    while True:
        conn = http.client.HTTPConnection(host, int(port), timeout=1.0)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        finally:
            conn.close()
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ConfigError(
                f"the identity issuer at {info.issuer_url} did not come up; issuer.log ends "
                f"with: {openbao.tail(Path(info.issuer_log))}",
                "fix the error above (the stack was stopped and removed)",
            )
        time.sleep(0.05)


def stop(info: StackInfo) -> None:
    openbao.stop_process(info.issuer_pid, expect=info.issuer_settings_path or None)
