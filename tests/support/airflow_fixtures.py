"""Real Airflow for the tests: one AIRFLOW_HOME per session, DAGs run with `airflow dags test`."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from airflow_hoop.devstack import airflow_env
from airflow_hoop.devstack.models import StackInfo

DAGS = Path(__file__).parent / "dags"
STATIC_PASSWORD = "static-test-password"


class AirflowHome:
    """An Airflow home wired to the stack, with helpers to run DAGs and read what they left."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.log = home / "airflow-commands.log"
        self._output: dict[str, str] = {}

    def dags_test(
        self, dag_id: str, logical_date: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = airflow_env.dags_test(self.env, dag_id, logical_date=logical_date)
        with self.log.open("a") as out:
            out.write(proc.stdout + proc.stderr)
        self._output[dag_id] = self._output.get(dag_id, "") + proc.stdout + proc.stderr
        return proc

    @property
    def db_path(self) -> Path:
        """Airflow's SQLite metadata database (the stack's, which its issuer reads)."""
        url = self.env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
        return Path(url.removeprefix("sqlite:///")) if url else self.home / "airflow.db"

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db_path)

    def latest_run(self, dag_id: str) -> str:
        with self._db() as db:
            row = db.execute(
                "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
        assert row, f"no run of {dag_id}"
        return row[0]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        with self._db() as db:
            rows = db.execute(
                "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (dag_id, run_id),
            ).fetchall()
        return dict(rows)

    def xcoms(self, dag_id: str, run_id: str) -> dict[str, Any]:
        with self._db() as db:
            rows = db.execute(
                "SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'",
                (dag_id, run_id),
            ).fetchall()
        return {
            task: json.loads(value) if isinstance(value, str) else value for task, value in rows
        }

    def xcom_text(self, dag_id: str, run_id: str) -> str:
        with self._db() as db:
            rows = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
            ).fetchall()
        return "\n".join(str(v) for (v,) in rows)

    def task_logs(self, dag_id: str) -> str:
        """What the DAG's tasks logged: `dags test` prints task logs; files too, if any."""
        root = self.home / "logs"
        return self._output.get(dag_id, "") + "\n".join(
            p.read_text(errors="replace")
            for p in sorted(root.rglob("*.log"))
            if f"dag_id={dag_id}" in str(p)
        )


def _connections(stack: StackInfo) -> dict[str, str]:
    conns = stack.airflow_connections()
    hoop = conns["hoop_default"]
    closed_port = "http://127.0.0.1:9"  # discard port: nothing listens there
    extra = {
        "hoop_gateway_down": {**hoop, "host": closed_port},
        "hoop_vault_down": {**hoop, "extra": {**hoop["extra"], "vault_url": closed_port}},
        "warehouse_gateway_down": {
            "conn_type": "hoop_postgres",
            "schema": "warehouse",
            "extra": {"hoop_conn_id": "hoop_gateway_down"},
        },
        "warehouse_vault_down": {
            "conn_type": "hoop_postgres",
            "schema": "warehouse",
            "extra": {"hoop_conn_id": "hoop_vault_down"},
        },
        "warehouse_unknown": {
            "conn_type": "hoop_postgres",
            "schema": "no_such_target",
            "extra": {"hoop_conn_id": "hoop_default"},
        },
        "warehouse_direct": {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": stack.pg_port,
            "login": "warehouse_static",
            "password": STATIC_PASSWORD,
            "schema": stack.warehouse_db,
        },
    }
    return {f"AIRFLOW_CONN_{k.upper()}": json.dumps(v) for k, v in extra.items()}


@pytest.fixture(scope="session")
def airflow_home(stack: StackInfo) -> Iterator[AirflowHome]:
    """A migrated Airflow home whose DAGs folder holds the example DAGs and tests/support/dags."""
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
        conn.execute(
            f"CREATE ROLE warehouse_static LOGIN PASSWORD '{STATIC_PASSWORD}' IN ROLE warehouse_writer"
        )
        conn.execute("ALTER ROLE warehouse_static SET role TO 'warehouse_writer'")
    root = Path(tempfile.mkdtemp(prefix="airflow-hoop-airflow-"))
    dags = root / "dags"
    shutil.copytree(airflow_env.EXAMPLE_DAGS, dags)
    shutil.copytree(DAGS, dags, dirs_exist_ok=True)
    home = root / "home"
    env = airflow_env.airflow_env(home, stack, dags, **_connections(stack))
    airflow_env.migrate(env)
    yield AirflowHome(home, env)
    shutil.rmtree(root, ignore_errors=True)
