"""A throwaway Airflow home wired to an embedded stack, and the commands run in it.

Used by ``airflow-hoop demo``, the test suite and (later) ``make ui``: one place decides how
Airflow is pointed at the stack (connections as ``AIRFLOW_CONN_*`` variables, never files).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.errors import ConfigError

#: The repository's example DAGs. An installed wheel has no repository around it (the tox
#: compatibility matrix runs the suite that way): ``AIRFLOW_HOOP_EXAMPLE_DAGS`` names them.
EXAMPLE_DAGS = Path(
    os.environ.get("AIRFLOW_HOOP_EXAMPLE_DAGS")
    or Path(__file__).resolve().parents[2] / "example_dags"
)


def airflow_env(
    home: Path, stack: StackInfo, dags_folder: Path = EXAMPLE_DAGS, **overrides: str
) -> dict[str, str]:
    """Environment for Airflow commands: its own home, the DAGs folder, the stack's connections."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "NO_PROXY": "*",
            # The metadata database the stack's standalone issuer attests from.
            **(
                {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": stack.airflow_metadata_url}
                if stack.airflow_metadata_url
                else {}
            ),
            **stack.airflow_env(),
            **overrides,
        }
    )
    return env


def airflow(
    env: dict[str, str], *args: str, log: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``airflow <args>`` in that environment; output goes to ``log`` when given."""
    cmd = [sys.executable, "-m", "airflow", *args]
    if log is None:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    with log.open("a") as out:
        out.write(f"$ airflow {' '.join(args)}\n")
        out.flush()
        return subprocess.run(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout
        )


def migrate(env: dict[str, str], log: Path | None = None) -> None:
    """Create Airflow's metadata database (the stack's SQLite file unless overridden)."""
    proc = airflow(env, "db", "migrate", log=log)
    if proc.returncode != 0:
        raise ConfigError(
            f"airflow db migrate failed (exit {proc.returncode}): {(proc.stderr or '')[-800:]}",
            "see the Airflow output above",
        )


def dags_test(
    env: dict[str, str], dag_id: str, *, logical_date: str | None = None, log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``airflow dags test`` (every task in-process, the real operators, triggers inline)."""
    args = ["dags", "test", dag_id]
    if logical_date:
        args.append(logical_date)
    return airflow(env, *args, log=log)
