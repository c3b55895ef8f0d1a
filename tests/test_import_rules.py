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
