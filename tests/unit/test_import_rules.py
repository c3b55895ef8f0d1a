"""ARCHITECTURE.md's dependency rules, checked with import-linter against the real package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is a test dependency"
    proc = subprocess.run([lint_imports], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 kept, 0 broken" in proc.stdout


#: One planted import per rule: (module file, the line planted, the contract it must break).
PLANTED = [
    ("gateway/pipeline.py", "import airflow_hoop.client.http", "layers: each package"),
    ("wire/values.py", "import airflow_hoop.gateway.settings", "layers: each package"),
    ("task/identity.py", "import airflow_hoop.gateway.settings", "never imports the gateway"),
    ("plugins/common.py", "import airflow_hoop.gateway.settings", "never imports the gateway"),
    ("ledger/chain.py", "import airflow", "never import airflow"),
    ("gateway/targets.py", "import airflow.models", "never import airflow"),
    ("ledger/records.py", "import httpx", "ledger and wire are pure"),
    ("stream/ocsf.py", "import airflow_hoop.gateway.settings", "layers: each package"),
    ("stream/chain.py", "import airflow.models", "never import airflow"),
    ("gateway/db/store.py", "import airflow_hoop.gateway.routes.deps", "gateway layers"),
    (
        "gateway/masking/detectors.py",
        "import airflow_hoop.gateway.masking.engine",
        "no import cycles",
    ),
]


@pytest.mark.parametrize(("module", "line", "contract"), PLANTED, ids=[p[0] for p in PLANTED])
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, contract):
    """The contracts are not vacuous: a copy of the package with one forbidden import planted
    fails lint-imports, naming the contract it breaks and the planted importer."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports
    shutil.copytree(ROOT / "airflow_hoop", tmp_path / "airflow_hoop")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "airflow_hoop" / module).open("a") as f:
        f.write(f"\n{line}  # planted\n")
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [lint_imports, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # A planted cycle also breaks the layers: at least the named contract, none kept falsely.
    assert "0 broken" not in proc.stdout, proc.stdout
    report = proc.stdout.split("Broken contracts", 1)[1]
    # The contract's name may wrap onto two lines: compare without line breaks.
    assert contract in report.replace("\n", " "), proc.stdout
    # The report names the planted importer (by its last name for a cycle between modules).
    assert Path(module).stem in report, report


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
        "           'airflow_hoop.operators.approval_request', 'airflow_hoop.triggers.review',\n"
        "           'airflow_hoop.hooks.hoop', 'airflow_hoop.hooks.dbapi']\n"
        "print(sorted(m for m in runtime if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
