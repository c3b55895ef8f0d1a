"""What each supported Airflow version must see of the installed package: the provider, its
connection types, the plugin, and the example DAGs parsed without errors.

Runs in the main suite (the dev venv's Airflow) and in every tox environment of the
compatibility matrix (tox.ini: the built wheel in a fresh virtualenv with Airflow 3.1, 3.2 or
3.3), where it is the first smoke check before the governed-DAG tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_hoop

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    return env


def _airflow_json(env: dict[str, str], *args: str) -> list[dict[str, str]]:
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", *args, "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return list(json.loads(proc.stdout))


def test_airflow_lists_the_provider_and_its_connection_types(airflow_env: dict[str, str]) -> None:
    providers = {p["package_name"]: p for p in _airflow_json(airflow_env, "providers", "list")}
    assert providers["airflow-hoop"]["version"] == airflow_hoop.__version__
    hooks = {h["connection_type"]: h for h in _airflow_json(airflow_env, "providers", "hooks")}
    assert hooks["hoop"]["class"] == "airflow_hoop.hooks.hoop.HoopHook"
    assert hooks["hoop_postgres"]["class"] == "airflow_hoop.hooks.postgres.HoopPostgresHook"


def test_airflow_loads_the_plugin(airflow_env: dict[str, str]) -> None:
    plugins = {p["name"]: p for p in _airflow_json(airflow_env, "plugins")}
    assert "airflow_hoop" in plugins
    assert "HoopListenerPlugin" in json.dumps(plugins["airflow_hoop"]) or plugins["airflow_hoop"]


def test_example_dags_parse_without_import_errors() -> None:
    # DagBag moved in Airflow 3.2 (airflow.dag_processing.dagbag) and lost include_examples.
    try:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

        bag = DagBag(dag_folder=str(EXAMPLE_DAGS), include_examples=False)  # type: ignore[call-arg]
    assert bag.import_errors == {}
    assert {"governed_etl", "governed_approval", "governed_shell"} <= set(bag.dag_ids)
