"""Real Airflow services for tests and benchmarks: api-server, scheduler, dag-processor, triggerer.

Each runs as its own process (``start_new_session``), started and stopped by PID (SIGINT, then
SIGKILL after a grace period), so that one of them (the triggerer) can be restarted alone.
The API server alone gets the UI plugin's approver key; workers (forked by the scheduler)
never see it. Users come from a pre-written simple-auth-manager passwords file.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

from airflow_hoop.devstack import airflow_env, issuer_process
from airflow_hoop.devstack.models import StackInfo, write_private
from airflow_hoop.errors import ConfigError
from airflow_hoop.plugins.issuer.settings import SETTINGS_ENV

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: user -> role of the simple auth manager (admin triggers runs; alice approves; vic reads).
USERS = {"admin": "admin", "alice": "user", "vic": "viewer"}
_STOP_GRACE_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AirflowServices:
    """A running Airflow (LocalExecutor, parallelism 4) wired to an embedded stack."""

    def __init__(
        self,
        home: Path,
        stack: StackInfo,
        dags_folder: Path,
        *,
        port: int | None = None,
        **overrides: str,
    ) -> None:
        self.home = home
        self.stack = stack
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.passwords = {user: secrets.token_urlsafe(12) for user in USERS}
        fernet = base64.urlsafe_b64encode(os.urandom(32)).decode()
        # Airflow's metadata in the stack's Postgres: four processes and the executor's workers
        # write concurrently, which SQLite serialises into "database is locked" errors.
        self.metadata_db = f"airflow_{secrets.token_hex(4)}"
        home.mkdir(parents=True, exist_ok=True)
        passwords_file = home / "simple_auth_manager_passwords.json"
        write_private(passwords_file, json.dumps(self.passwords))
        self.env = airflow_env.airflow_env(
            home,
            stack,
            dags_folder,
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=(
                f"postgresql+psycopg2://{stack.pg_superuser}@/{self.metadata_db}"
                f"?host={stack.pg_socket_dir}&port={stack.pg_port}"
            ),
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            # Defaults an override may replace (bench/load.py runs with parallelism 16).
            **{"AIRFLOW__CORE__PARALLELISM": "4", **overrides},
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__FERNET_KEY=fernet,
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=",".join(f"{u}:{r}" for u, r in USERS.items()),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords_file),
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.url}/execution/",
            AIRFLOW__API__BASE_URL=self.url,
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__API__SECRET_KEY=secrets.token_urlsafe(24),
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(32),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.5",
        )
        # Tasks prove their steps to the issuer the API server mounts (same key and iss as the
        # stack's standalone one), which reads this Airflow's own metadata database.
        self.env.update(stack.airflow_env(issuer_url=f"{self.url}/hoop/issuer"))
        issuer_settings = issuer_process.write_settings(
            home / "issuer-api-server.yaml", stack, metadata_db_url=None
        )
        # Only the API server serves the UI plugin, so only it holds the approver and auditor keys.
        self.api_env = {
            **self.env,
            SETTINGS_ENV: str(issuer_settings),
            "AIRFLOW__HOOP__GATEWAY_URL": stack.gateway_url,
            "AIRFLOW__HOOP__APPROVER_API_KEY": stack.approver_api_key or "",
            # The Audit pages read the ledger with the auditor key (read-only).
            "AIRFLOW__HOOP__AUDITOR_API_KEY": stack.auditor_api_key,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = home / "services"
        self.logs.mkdir(exist_ok=True)
        self._tokens: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        with psycopg.connect(self.stack.admin_dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.metadata_db}"')
        airflow_env.migrate(self.env, log=self.logs / "migrate.log")
        for component in COMPONENTS:
            self.start_component(component)
        self.wait_healthy(timeout)

    def start_component(self, component: str) -> None:
        env = self.api_env if component == "api-server" else self.env
        with open(self.logs / f"{component}.log", "ab") as log:
            self.procs[component] = subprocess.Popen(
                [sys.executable, "-m", "airflow", component],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,
            )

    def stop_component(self, component: str) -> None:
        """SIGINT to the component's process group, SIGKILL to what is left after the grace."""
        proc = self.procs.pop(component, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        # Children (executor workers, triggerer runner) share the process group: end them too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        for component in reversed(COMPONENTS):
            self.stop_component(component)

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise ConfigError(
                        f"airflow {name} exited ({proc.returncode}); see {self.logs / name}.log"
                    )
            try:
                health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2).json()
                last = health
                if all(
                    (health.get(c) or {}).get("status") == "healthy"
                    for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                ):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        raise ConfigError(f"Airflow not healthy after {timeout:.0f}s (last: {last})")

    # -- the REST API ------------------------------------------------------------------------
    def token(self, user: str) -> str:
        if user not in self._tokens:
            response = httpx.post(
                f"{self.url}/auth/token",
                json={"username": user, "password": self.passwords[user]},
                timeout=10,
            )
            response.raise_for_status()
            self._tokens[user] = response.json()["access_token"]
        return self._tokens[user]

    def client(self, user: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, trust_env=False)

    def wait_dag(self, dag_id: str, timeout: float = 90.0) -> None:
        with self.client() as api:
            deadline = time.monotonic() + timeout
            while api.get(f"/api/v2/dags/{dag_id}").status_code != 200:
                if time.monotonic() > deadline:
                    raise ConfigError(f"DAG {dag_id} not parsed after {timeout:.0f}s")
                time.sleep(0.5)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, user: str = "admin") -> str:
        run_id = f"manual__{secrets.token_hex(6)}"
        with self.client(user) as api:
            response = api.post(
                f"/api/v2/dags/{dag_id}/dagRuns",
                json={"dag_run_id": run_id, "logical_date": None, "conf": conf or {}},
            )
            response.raise_for_status()
            return str(response.json()["dag_run_id"])

    def ti_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        with self.client() as api:
            response = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
            response.raise_for_status()
            state = response.json()["state"]
            return None if state is None else str(state)

    def wait_state(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 120.0
    ) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.ti_state(dag_id, run_id, task_id)
            if state in states:
                return state
            time.sleep(0.3)
        raise AssertionError(f"{dag_id}/{run_id}/{task_id} is {state}, not in {states}")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log as text (the API answers structured events)."""
        with self.client() as api:
            response = api.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                params={"full_content": "true"},
            )
            if response.status_code != 200:
                return f"(no log: {response.status_code} {response.text[:200]})"
            content = response.json().get("content", [])
        lines = []
        for item in content if isinstance(content, list) else [content]:
            if isinstance(item, dict):
                lines.append(" ".join(str(v) for k, v in item.items() if k != "timestamp"))
            else:
                lines.append(str(item))
        return "\n".join(lines)


@contextlib.contextmanager
def running_airflow(
    home: Path, stack: StackInfo, dags_folder: Path, *, port: int | None = None, **overrides: str
) -> Iterator[AirflowServices]:
    services = AirflowServices(home, stack, dags_folder, port=port, **overrides)
    try:
        services.start()
        yield services
    finally:
        services.stop()
