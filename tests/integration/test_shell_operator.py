"""HoopShellOperator in real Airflow (`airflow dags test`), against the stack's gateway."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.shell_support import wait_no_command

from airflow_hoop.cli.demo import read_ledger
from airflow_hoop.devstack import airflow_env
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.records import (
    CredentialRevoked,
    LedgerRecord,
    SessionIntent,
    SessionResult,
)
from airflow_hoop.ledger.verify import verify_chain

pytestmark = pytest.mark.airflow

WORKER_CANARY = "worker-canary-7f3a"


def _records(stack: StackInfo, dag_id: str, run_id: str) -> list[LedgerRecord]:
    records = [LedgerRecord.model_validate_json(r.body) for r in read_ledger(stack)]
    return [r for r in records if r.step and r.step.dag_id == dag_id and r.step.run_id == run_id]


def _sessions(records: list[LedgerRecord], task_id: str) -> list[tuple[LedgerRecord, LedgerRecord]]:
    """(intent, result) pairs of a task, in order; every intent must have its result."""
    intents = {
        r.body.session_id: r
        for r in records
        if isinstance(r.body, SessionIntent) and r.step and r.step.task_id == task_id
    }
    results = {r.body.session_id: r for r in records if isinstance(r.body, SessionResult)}
    assert set(intents) <= set(results), f"{task_id}: a command without its result record"
    return [(intents[s], results[s]) for s in intents]


# -- parity ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parity_run(airflow_home: Any) -> tuple[Any, str]:
    proc = airflow_home.dags_test("test_shell_parity")
    return proc, airflow_home.latest_run("test_shell_parity")


def test_bash_operator_parity(
    parity_run: tuple[Any, str], airflow_home: Any, stack: StackInfo
) -> None:
    proc, run_id = parity_run
    states = airflow_home.task_states("test_shell_parity", run_id)
    xcoms = airflow_home.xcoms("test_shell_parity", run_id)
    cases = sorted(t.removeprefix("bash_") for t in states if t.startswith("bash_"))
    assert len(cases) >= 20, states
    mismatches = []
    for case in cases:
        stock = (states[f"bash_{case}"], xcoms.get(f"bash_{case}"))
        governed = (states.get(f"hoop_{case}"), xcoms.get(f"hoop_{case}"))
        if stock != governed:
            mismatches.append(f"{case}: BashOperator {stock!r} != HoopShellOperator {governed!r}")
    assert not mismatches, "\n".join(mismatches) + proc.stdout[-3000:]
    # The table is not trivially green: it holds successes, failures and skips.
    assert {states[f"bash_{c}"] for c in cases} == {"success", "failed", "skipped"}
    assert xcoms["hoop_script_file"].startswith("done ") and xcoms["hoop_output_processor"] == {
        "a": [1, 2]
    }
    # Every governed task ran on the gateway, with a complete record; no stock task did.
    records = _records(stack, "test_shell_parity", run_id)
    governed = {r.step.task_id for r in records if r.step and isinstance(r.body, SessionIntent)}
    assert not any(t.startswith("bash_") for t in governed)
    expected = {f"hoop_{c}" for c in cases} - {"hoop_cwd_missing"}  # refused before running
    assert governed == expected
    for task in expected:
        ((_intent, result),) = _sessions(records, task)
        assert result.body.exit_code == {"success": 0}.get(states[task], result.body.exit_code)


def test_script_file_is_rendered_and_sent_whole(
    parity_run: tuple[Any, str], stack: StackInfo
) -> None:
    _, run_id = parity_run
    ((intent, result),) = _sessions(
        _records(stack, "test_shell_parity", run_id), "hoop_script_file"
    )
    assert isinstance(intent.body, SessionIntent) and "{{" not in intent.body.script
    assert "for i in $(seq 3); do" in intent.body.script
    assert isinstance(result.body, SessionResult) and result.body.status == "success"


# -- the edges ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def edge_run(airflow_home: Any) -> tuple[Any, str]:
    # A variable only the worker has: the command must not see it.
    env = {**airflow_home.env, "WORKER_CANARY": WORKER_CANARY}
    started = time.monotonic()
    proc = airflow_env.dags_test(env, "test_shell_edge")
    with airflow_home.log.open("a") as out:
        out.write(proc.stdout + proc.stderr)
    assert time.monotonic() - started < 120
    return proc, airflow_home.latest_run("test_shell_edge")


def test_the_command_sees_neither_the_worker_nor_the_gateway_environment(
    edge_run: tuple[Any, str], airflow_home: Any, stack: StackInfo
) -> None:
    _, run_id = edge_run
    assert airflow_home.task_states("test_shell_edge", run_id)["environment"] == "success"
    line = airflow_home.xcoms("test_shell_edge", run_id)["environment"]
    names = {item.split("=", 1)[0] for item in line.split()}
    assert "FROM_TASK=task-value" in line and "AIRFLOW_CTX_DAG_ID=test_shell_edge" in line
    assert "PGPASSWORD=***" in line and "PGUSER" in names
    gateway_token = yaml.safe_load(Path(stack.gateway_settings_path).read_text())["vault"]["auth"]
    assert gateway_token["token"] not in line and WORKER_CANARY not in line
    leaked = [n for n in names if n.startswith(("AIRFLOW_CONN", "AIRFLOW__", "HOOP_", "VAULT"))]
    assert not leaked and "AIRFLOW_HOME" not in names


def test_task_kill_stops_the_command_on_the_gateway_within_5s(
    edge_run: tuple[Any, str], airflow_home: Any, stack: StackInfo
) -> None:
    proc, run_id = edge_run
    assert airflow_home.task_states("test_shell_edge", run_id)["never_ends"] == "failed"
    records = _records(stack, "test_shell_edge", run_id)
    ((intent, result),) = _sessions(records, "never_ends")
    assert isinstance(result.body, SessionResult) and result.body.status == "killed"
    # From the moment Airflow timed the task out to the gateway's record of the stopped command.
    timed_out = re.search(r"(\S+Z) \[error\s*\] Process timed out", proc.stdout + proc.stderr)
    assert timed_out, "the task was not timed out"
    killed_after = result.time - datetime.fromisoformat(timed_out.group(1).replace("Z", "+00:00"))
    assert 0 < killed_after.total_seconds() < 5, killed_after
    assert (result.time - intent.time).total_seconds() > 3  # it did run until the timeout
    revoked = [
        r
        for r in records
        if isinstance(r.body, CredentialRevoked) and r.step and r.step.task_id == "never_ends"
    ]
    assert [r.body.reason for r in revoked] == ["step-end"]
    output = _session_output(stack, result.body.session_id)
    workdir = output.splitlines()[0]
    assert wait_no_command(workdir, 2.0), "the command outlived the task"
    assert "[gateway] session killed" in output
    # The task log showed the command's first line while it ran, before the timeout hit.
    log = proc.stdout + proc.stderr
    logged = re.search(rf"\] {re.escape(workdir)}\s+\[airflow\.task\.operators", log)
    assert logged, "the command's output was not logged"
    assert logged.start() < log.index("Process timed out"), "logged only after the kill"


def test_bad_output_and_bad_commands_end_clearly_with_complete_records(
    edge_run: tuple[Any, str], airflow_home: Any, stack: StackInfo
) -> None:
    _, run_id = edge_run
    states = airflow_home.task_states("test_shell_edge", run_id)
    xcoms = airflow_home.xcoms("test_shell_edge", run_id)
    records = _records(stack, "test_shell_edge", run_id)
    expected = {
        "binary_output": ("success", "a\\xff\\x00b"),
        "output_200mb": ("success", "the last line"),
        "memory_hog": ("failed", None),
        "empty_script": ("success", ""),
    }
    for task, (state, xcom) in expected.items():
        assert (states[task], xcoms.get(task)) == (state, xcom), task
        ((_intent, result),) = _sessions(records, task)
        assert isinstance(result.body, SessionResult) and result.body.shell is not None
    big = _sessions(records, "output_200mb")[0][1].body
    assert isinstance(big, SessionResult) and big.truncated and big.shell
    assert big.shell.output_bytes == 200_000_000 + 1 + 14
    hog = _sessions(records, "memory_hog")[0][1].body
    assert isinstance(hog, SessionResult) and hog.exit_code == 1 and hog.status == "failed"
    assert "MemoryError" in _session_output(stack, hog.session_id)
    assert verify_chain(read_ledger(stack)).ok


def _session_output(stack: StackInfo, session_id: str) -> str:
    with httpx.Client(base_url=stack.gateway_url, trust_env=False, timeout=30) as client:
        response = client.get(
            f"/api/sessions/{session_id}",
            headers={"Authorization": f"Bearer {stack.auditor_api_key}"},
        )
    assert response.status_code == 200, response.text
    return str(json.loads(response.text)["output"])


# -- the example DAG ---------------------------------------------------------------------------
def test_governed_shell_example_exports_as_the_steps_own_user(
    airflow_home: Any, stack: StackInfo, admin_conn: Any
) -> None:
    proc = airflow_home.dags_test("governed_shell")
    run_id = airflow_home.latest_run("governed_shell")
    states = airflow_home.task_states("governed_shell", run_id)
    assert set(states.values()) == {"success"}, (states, proc.stdout[-3000:])
    digest = airflow_home.xcoms("governed_shell", run_id)["export_shipments"]
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    records = _records(stack, "governed_shell", run_id)
    ((intent, result),) = _sessions(records, "export_shipments")
    assert (
        isinstance(intent.body, SessionIntent)
        and "\\copy (SELECT * FROM shipments" in intent.body.script
    )
    user = intent.body.db_user
    assert user and user.startswith("af_governed-shell-export")
    assert isinstance(result.body, SessionResult) and result.body.shell
    assert result.body.status == "success" and result.body.shell.masked == 1
    log = airflow_home.task_logs("governed_shell")
    assert f"exported 3 rows as {user}" in log
    assert "password seen by the command: ***" in log
    row = admin_conn().execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
    assert row is None, "the step's database user outlived the step"
