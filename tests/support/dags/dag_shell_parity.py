"""Pairs of tasks: BashOperator on the worker, HoopShellOperator on the gateway.

The test compares each pair's final state and XCom: the governed operator must behave exactly
as the stock one does.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from airflow_hoop.operators.shell import HoopShellOperator

CASES: dict[str, dict[str, Any]] = {
    "echo": {"bash_command": "echo hello"},
    "last_line": {"bash_command": "echo one; echo two"},
    "trailing_blank_line": {"bash_command": "echo a; echo"},
    "no_newline_trailing_space": {"bash_command": "printf 'x y  '"},
    "stderr_merged": {"bash_command": "echo out; echo err >&2"},
    "unicode": {"bash_command": "echo 'héllo ✓'"},
    "invalid_utf8": {"bash_command": r"printf 'a\xffb\n'"},
    "latin1": {"bash_command": r"printf 'caf\xe9\n'", "output_encoding": "latin-1"},
    "exit_in_the_middle": {"bash_command": "echo a; exit 0; echo b"},
    "exit_1": {"bash_command": "echo no; exit 1"},
    "set_e": {"bash_command": "set -e; false; echo unreachable"},
    "skip_99": {"bash_command": "exit 99"},
    "skip_custom": {"bash_command": "exit 3", "skip_on_exit_code": [3, 4]},
    "skip_disabled": {"bash_command": "exit 99", "skip_on_exit_code": None},
    "templated": {"bash_command": "echo {{ ds }} {{ params.who }}", "params": {"who": "me"}},
    "env_templated": {"bash_command": 'echo "$GREETING"', "env": {"GREETING": "hi {{ ds }}"}},
    "env_appended": {
        "bash_command": 'echo "$A-$B"',
        "env": {"A": "1", "B": "2"},
        "append_env": True,
    },
    "airflow_ctx_vars": {"bash_command": 'echo "$AIRFLOW_CTX_DAG_ID $AIRFLOW_CTX_DAG_RUN_ID"'},
    "script_file": {"bash_command": "parity.sh", "params": {"n": 3}},
    "output_processor": {
        "bash_command": """echo '{"a": [1, 2]}'""",
        "output_processor": json.loads,
    },
    "cwd": {"bash_command": "pwd", "cwd": tempfile.gettempdir()},
    "cwd_missing": {"bash_command": "pwd", "cwd": f"{tempfile.gettempdir()}/hoop-no-such-dir"},
    "empty_script": {"bash_command": ""},
}

with DAG(
    dag_id="test_shell_parity",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    template_searchpath=[str(Path(__file__).parent / "scripts")],
) as dag:
    for name, kwargs in CASES.items():
        BashOperator(task_id=f"bash_{name}", **kwargs)
        HoopShellOperator(task_id=f"hoop_{name}", connection="ops_shell", **kwargs)
