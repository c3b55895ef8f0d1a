"""ARCHITECTURE.md's dependency rules, checked with import-linter against the real package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is a test dependency"
    proc = subprocess.run([lint_imports], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout


def test_gateway_runs_without_airflow_importable():
    """Import the gateway and the ledger in a process where `import airflow` fails."""
    code = (
        "import sys; sys.modules['airflow'] = None\n"
        "import airflow_hoop.gateway.app, airflow_hoop.ledger.chain, airflow_hoop.client.http\n"
        "print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_parsing_a_governed_dag_imports_none_of_the_runtime():
    """The dag-processor parses DAG files again and again (and once more for every callback,
    e.g. each approval sensor the trigger ends): the operators' modules must not pull in Vault,
    the gateway client or the approval machinery, which only a running task needs."""
    code = (
        "import sys\n"
        "sys.path.insert(0, 'example_dags')\n"
        "import governed_etl, governed_shell, governed_approval\n"
        "runtime = ['hvac', 'jwt', 'requests', 'airflow_hoop.task.vault', 'airflow_hoop.task.step_session',\n"
        "           'airflow_hoop.client.http', 'airflow_hoop.wire.reviews',\n"
        "           'airflow_hoop.task.approval_request', 'airflow_hoop.triggers.review',\n"
        "           'airflow_hoop.hooks.hoop', 'airflow_hoop.hooks.dbapi']\n"
        "print(sorted(m for m in runtime if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
