"""Shell leftovers of the faults work, against the session stack's real gateway and bash.

- A process that leaves the command's process group with ``setsid`` is killed when the command
  ends, is killed or times out (with it the sandbox's PID namespace; without a sandbox, found
  by the run's mark in its environment).
- A shell command's approval binds its client_args, cwd and environment, not only its script.
"""

from __future__ import annotations

import tempfile
import uuid
from typing import Any

import httpx
import pytest
from support.gateway_support import StepClient, ledger_records, step_client, wait_done
from support.shell_support import command_pids, wait_no_command

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.commands import (
    command_sha256,
    parameters_sha256,
    shell_context,
    statement_sha256,
)
from airflow_hoop.ledger.records import ReviewRequested, SessionIntent, StepRef
from airflow_hoop.wire.env import encode_env_vars
from airflow_hoop.wire.reviews import ReviewCreated

SHELL = "ops_shell"
# Leaves the group, then its parent exits: the classic daemon escape.
ESCAPE = "pwd; setsid sleep 1000 </dev/null >/dev/null 2>&1 & true"


@pytest.fixture
def step_ref() -> StepRef:
    """The ``step`` fixture's step (tests/integration/conftest.py) is a run of this module's DAG."""
    return StepRef(
        dag_id="test_faults_shell", task_id="t", run_id=f"manual__{uuid.uuid4().hex[:10]}"
    )


def _run(client: StepClient, script: str, **body: Any) -> httpx.Response:
    payload: dict[str, Any] = {"connection": SHELL, "script": script, **body}
    return client.http.post("/api/sessions", json=payload, headers=client.headers())


def test_a_setsid_process_is_gone_when_the_command_ends(step: StepClient) -> None:
    answer = _run(step, ESCAPE)
    assert answer.status_code == 200, answer.text
    workdir = answer.json()["output"].split()[0]
    assert wait_no_command(workdir, 2.0), "setsid escaped the end of the command"


def test_a_forked_setsid_process_holding_the_output_is_gone(step: StepClient) -> None:
    # setsid -f forks: a new session whose leader keeps the output pipe open.
    answer = _run(step, "pwd; setsid -f sh -c 'exec sleep 1000'; sleep 0.3")
    assert answer.status_code == 200, answer.text
    workdir = answer.json()["output"].split()[0]
    assert wait_no_command(workdir, 2.0)


def test_a_setsid_process_is_gone_when_the_command_is_killed(step: StepClient) -> None:
    answer = _run(step, f"{ESCAPE}; sleep 1000", airflow_hoop={"sync_seconds": 0.5})
    assert answer.status_code == 202, answer.text
    session_id = answer.json()["session_id"]
    workdir = step.get(f"/api/sessions/{session_id}").json()["output"].split()[0]
    assert command_pids(workdir)
    assert step.post(f"/api/sessions/{session_id}/kill").status_code == 204
    wait_done(step, session_id, timeout=10)
    assert wait_no_command(workdir, 2.0), "setsid escaped the kill"


def test_a_setsid_process_is_gone_when_the_step_ends(stack: StackInfo) -> None:
    run_id = f"manual__{uuid.uuid4().hex[:10]}"
    with step_client(stack, StepRef(dag_id="test_faults_shell", task_id="e", run_id=run_id)) as c:
        answer = _run(c, f"{ESCAPE}; sleep 1000", airflow_hoop={"sync_seconds": 0.5})
        session_id = answer.json()["session_id"]
        workdir = c.get(f"/api/sessions/{session_id}").json()["output"].split()[0]
        assert command_pids(workdir)
        assert c.end().status_code == 200
        assert wait_no_command(workdir, 5.0)


# -- approvals bind the environment ---------------------------------------------------------
APPROVAL_DAG = "test_approval_shell_ctx"
SCRIPT = 'echo "$GREETING $1"'


def _step(run_id: str, task_id: str) -> StepRef:
    return StepRef(dag_id=APPROVAL_DAG, task_id=task_id, run_id=run_id, triggered_by="alice")


def _exec(
    client: StepClient, env: dict[str, str], args: list[str], cwd: str | None
) -> httpx.Response:
    ext: dict[str, Any] = {} if cwd is None else {"airflow_hoop": {"cwd": cwd}}
    return _run(client, SCRIPT, env_vars=encode_env_vars(env), client_args=args, **ext)


def test_a_shell_approval_binds_client_args_cwd_and_environment(stack: StackInfo) -> None:
    env, args, cwd = {"GREETING": "hello-approved"}, ["-s", "world"], tempfile.gettempdir()
    context = shell_context(args, cwd, [("GREETING", "env", env["GREETING"])])
    assert context is not None and "hello-approved" not in str(context)  # values by digest
    digest = command_sha256([statement_sha256(SCRIPT, parameters_sha256(context))])
    run_id = f"manual__{uuid.uuid4().hex[:10]}"
    with (
        step_client(stack, _step(run_id, "approve")) as sensor,
        step_client(stack, _step(run_id, "load")) as load,
    ):
        body = {
            "connection": SHELL,
            "target_task_id": "load",
            "statements": [{"script": SCRIPT, "parameters": context}],
            "command_sha256": digest,
            "justification": "greet",
        }
        asked = sensor.http.post("/api/airflow-hoop/reviews", json=body, headers=sensor.headers())
        assert asked.status_code in (200, 201), asked.text
        review = ReviewCreated.model_validate(asked.json()).review
        assert "hello-approved" not in asked.text
        with httpx.Client(base_url=stack.gateway_url, trust_env=False, timeout=30) as http:
            decided = http.put(
                f"/api/reviews/{review.id}",
                json={"status": "APPROVED"},
                headers={"Authorization": f"Bearer {stack.reviewer_api_key}"},
            )
        assert decided.status_code == 200, decided.text

        # The approved script with anything else changed is another command.
        for other_env, other_args, other_cwd in [
            ({"GREETING": "hello-evil"}, args, cwd),
            ({**env, "LD_PRELOAD": "/tmp/x.so"}, args, cwd),
            (env, ["-s", "; rm -rf /"], cwd),
            (env, args, None),
        ]:
            refused = _exec(load, other_env, other_args, other_cwd)
            assert refused.status_code == 403, refused.text
            assert "differs from the one under review" in refused.json()["message"]

        ran = _exec(load, env, args, cwd)
        assert ran.status_code == 200, ran.text
        assert ran.json()["output"] == "hello-approved world\n"
        session_id = ran.json()["session_id"]

    records = ledger_records(stack)
    intent = next(
        r.body
        for r in records
        if isinstance(r.body, SessionIntent) and r.body.session_id == session_id
    )
    requested = next(
        r.body
        for r in records
        if isinstance(r.body, ReviewRequested) and r.body.review_id == review.id
    )
    # The intent carries the same parameters digest the approval was given for.
    assert intent.parameters_sha256 == requested.statements[0].parameters_sha256
    assert intent.parameters_sha256 == parameters_sha256(context)


def test_a_plain_script_keeps_its_script_only_digest() -> None:
    assert shell_context([], None, []) is None
    with_env = shell_context([], None, [("A", "env", "1")])
    with_file = shell_context([], None, [("A", "file", "1")])
    assert with_env != with_file  # a variable and a file variable are different commands
