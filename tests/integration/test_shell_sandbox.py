"""The shell sandbox as a hostile DAG author meets it: real gateway, real bubblewrap, real bash.

What a command tries here it could do on the host without the sandbox (a ``sandbox: none``
connection shows the difference where the test would otherwise prove nothing): list the
gateway's processes, read the stack's files, open a TCP connection to the gateway, OpenBao or
PostgreSQL on 127.0.0.1, look into another step's working directory. It still runs ``psql`` as
its own dynamic user, through the gateway's relay socket.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from support.gateway_support import (
    StepClient,
    extra_gateway,
    ledger_records,
    session_records,
    step_client,
)

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.devstack.stack import SHELL_MASKING
from airflow_hoop.ledger.records import CredentialIssued, SessionIntent
from airflow_hoop.wire.sessions import ExecResponse

ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def gateway(stack: StackInfo) -> Iterator[str]:
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    common: dict[str, Any] = {"type": "custom", "allowed_dags": ["test_*"]}
    if ROOT:
        common["run_as_user"] = "nobody"
    connections = [
        *settings["connections"],
        {"name": "box", **common},
        {"name": "box_net", "network": "host", **common},
        {"name": "box_quick", "timeout_seconds": 1, "kill_grace_seconds": 3, **common},
        {"name": "open", "sandbox": "none", **common},
        # bwrap cannot bind a path that does not exist: a sandbox that cannot be made here.
        {
            "name": "broken",
            "read_only_paths": ["/nonexistent/hoop-tools"],
            "database": "warehouse",
            # The warehouse is masked: a shell reaching it carries the detectors (siblings).
            "masking": SHELL_MASKING,
            **common,
        },
    ]
    token = settings["vault"]["auth"]["token"]
    env = {"HOOP_GATEWAY_VAULT__AUTH__TOKEN": token}
    with extra_gateway(stack, "sandbox", env=env, connections=connections) as url:
        yield url


@pytest.fixture
def step_url(gateway: str) -> str:
    return gateway


def run(client: StepClient, script: str, connection: str = "box", **ext: Any) -> httpx.Response:
    body: dict[str, Any] = {"connection": connection, "script": script}
    if ext:
        body["airflow_hoop"] = ext
    return client.http.post("/api/sessions", json=body, headers=client.headers())


def output(client: StepClient, script: str, connection: str = "box") -> str:
    response = run(client, script, connection)
    assert response.status_code == 200, response.text
    return ExecResponse.model_validate(response.json()).output


def intent_of(stack: StackInfo, response: httpx.Response) -> SessionIntent:
    body = session_records(stack, response.json()["session_id"])[0].body
    assert isinstance(body, SessionIntent)
    return body


def test_a_command_sees_only_its_own_processes(stack: StackInfo, step: StepClient) -> None:
    script = "ps ax -o pid=,args=; echo ---; ls /proc | grep -E '^[0-9]+$' | wc -l; true"
    inside = output(step, script)
    listed, count = inside.split("---\n")
    # bwrap's init, bash, ps (and the subshell of the pipeline), nothing of the host.
    assert int(count) <= 6, inside
    init, *others = listed.splitlines()
    assert init.split()[:2] == ["1", "/usr/bin/bwrap"], listed
    assert not re.search(r"bao|postgres|uvicorn|python", "\n".join(others)), listed
    for pid in (stack.bao_pid, stack.gateway_pid):
        assert pid is not None
        probe = output(step, f"cat /proc/{pid}/cmdline /proc/{pid}/environ 2>&1; true")
        assert "No such file or directory" in probe and stack.bao_root_token not in probe
    # The same command without a sandbox sees the host's processes: the test can tell.
    assert re.search(r"bao|postgres", output(step, "ps ax -o args=", "open"))


def test_a_command_cannot_read_the_gateway_files(stack: StackInfo, step: StepClient) -> None:
    run_dir, settings_file = stack.run_dir, stack.gateway_settings_path
    own_settings = Path(run_dir) / "gateway-sandbox.yaml"
    script = f"ls -a {run_dir} 2>&1; cat {settings_file} {own_settings} 2>&1; ls /etc; true"
    inside = output(step, script)
    assert inside.count("No such file or directory") == 3, inside
    assert stack.bao_root_token not in inside
    etc = set(inside.splitlines()[3:])
    assert {"passwd", "group", "ld.so.cache"} <= etc
    assert not etc & {"shadow", "gshadow", "sudoers", "ssh", "airflow-hoop"}
    # The system is there, read-only; /tmp is the sandbox's own.
    assert "Read-only file system" in output(step, "touch /usr/x 2>&1; true")
    assert "hoop-" not in output(step, 'ls /tmp | grep -v "^$(basename $PWD)$"; true')


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def test_a_command_without_network_cannot_connect(stack: StackInfo, step: StepClient) -> None:
    targets = [_port(stack.gateway_url), _port(stack.bao_addr), stack.pg_port]
    script = "".join(
        f"(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo open {port} || "
        f"echo closed {port}; "
        for port in targets
    )
    assert output(step, script) == "".join(f"closed {p}\n" for p in targets)
    # network: host reaches them (so the probe above can see an open port).
    assert output(step, script, "box_net") == "".join(f"open {p}\n" for p in targets)
    # Only the sandbox's own loopback exists.
    interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"
    assert output(step, interfaces) == "lo\n"
    assert "lo\n" in output(step, interfaces, "open") != "lo\n"


def test_a_command_cannot_see_another_steps_working_directory(
    stack: StackInfo, gateway: str
) -> None:
    with step_client(stack, url=gateway) as first, step_client(stack, url=gateway) as second:
        started = run(first, "pwd; echo secret > mine; sleep 30", sync_seconds=0.5)
        assert started.status_code == 202, started.text
        session_id = started.json()["session_id"]
        workdir = first.get(f"/api/sessions/{session_id}").json()["output"].strip()
        assert Path(workdir, "mine").read_text() == "secret\n"  # it is there, on the host
        seen = output(second, f"ls {workdir} 2>&1; cat {workdir}/mine 2>&1; ls /tmp; true")
        assert "secret" not in seen and seen.count("No such file or directory") == 2, seen
        assert os.path.basename(workdir) not in seen.splitlines()[-1]
        assert first.post(f"/api/sessions/{session_id}/kill").status_code == 204


def test_psql_runs_as_the_steps_own_user_through_the_relay(stack: StackInfo) -> None:
    # The stack's ops_shell: database warehouse, sandboxed, no network.
    with step_client(stack) as client:
        script = (
            "psql -tAc 'select session_user'; echo host=$PGHOST; "
            "psql -h 127.0.0.1 -tAc 'select 1' 2>&1 | grep -c 'Connection refused'; true"
        )
        response = run(client, script, "ops_shell")
        assert response.status_code == 200, response.text
        res = ExecResponse.model_validate(response.json())
        user, host, refused = res.output.splitlines()[:3]
        assert res.airflow_hoop and user == res.airflow_hoop.db_user
        assert host == "host=/run/hoop-db" and int(refused) >= 1
        intent = intent_of(stack, response)
        assert intent.shell and (intent.shell.sandbox, intent.shell.network) == (
            "bubblewrap",
            "none",
        )


def test_where_no_sandbox_can_be_made_the_connection_is_refused(
    stack: StackInfo, step: StepClient
) -> None:
    refused = run(step, "echo ran", "broken")
    assert refused.status_code == 503, refused.text
    message = refused.json()["message"]
    assert "cannot sandbox commands" in message and "sandbox: none" in message
    assert "ran" not in refused.text
    # Refused before the step's database user was minted.
    issued = [r for r in ledger_records(stack) if isinstance(r.body, CredentialIssued)]
    assert not [r for r in issued if r.step == step.step]


def test_sandbox_none_is_named_by_the_record_and_check_config(
    stack: StackInfo, step: StepClient
) -> None:
    response = run(step, "true", "open")
    assert response.status_code == 200, response.text
    intent = intent_of(stack, response)
    assert intent.shell and intent.shell.sandbox == "none" and intent.shell.network is None
    settings_file = str(Path(stack.run_dir) / "gateway-sandbox.yaml")
    checked = subprocess.run(
        [sys.executable, "-m", "airflow_hoop.cli.main", "gateway", "check-config", settings_file],
        capture_output=True,
        text=True,
        check=False,
    )
    text = checked.stdout + checked.stderr
    lines = {line.split(":", 1)[0].strip(): line for line in text.splitlines() if ":" in line}
    assert "NO sandbox (sandbox: none)" in lines["open"], text
    assert "sandbox bubblewrap, network none" in lines["box"]
    assert "network host" in lines["box_net"]
    assert "will refuse this connection here" in text


def test_a_timed_out_command_still_gets_sigterm_and_its_grace(step: StepClient) -> None:
    """bwrap does not pass SIGTERM on: the gateway sends it to the command's processes."""
    script = "trap 'echo got TERM; exit 5' TERM; sleep 30 & wait"
    response = run(step, script, "box_quick")
    assert response.status_code == 200, response.text
    res = ExecResponse.model_validate(response.json())
    assert res.output.startswith("got TERM\n") and "[gateway] timed out after 1s" in res.output
