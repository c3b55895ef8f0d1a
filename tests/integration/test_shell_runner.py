"""Shell steps at the gateway: real gateway processes, real Vault, real Postgres, real bash.

One extra gateway process carries the shell connections these tests need (small caps and
limits, short timeouts) and runs with its Vault token and a canary in its own environment, so
that the tests can look for them from inside the commands.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.gateway_support import (
    StepClient,
    extra_gateway,
    ledger_count,
    ledger_records,
    session_records,
    step_client,
    wait_done,
)
from support.shell_support import command_pids, wait_no_command

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.gateway.execution.runners.output import MASK, Masker, OutputCapture
from airflow_hoop.gateway.settings import GatewaySettings, PostgresConnection, ShellConnection
from airflow_hoop.ledger.records import (
    CredentialIssued,
    CredentialRevoked,
    PolicyRefused,
    SessionIntent,
    SessionResult,
)
from airflow_hoop.wire.env import encode_env_vars
from airflow_hoop.wire.sessions import ExecResponse, SessionInfo

CANARY = f"canary-{uuid.uuid4().hex}"
ROOT = os.geteuid() == 0
SMALL_CAP = 1_048_576
MEMORY_LIMIT = 256 * 1024 * 1024


@pytest.fixture(scope="module")
def cwd_root() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are private to us, and the command may run as nobody.
    root = Path(tempfile.mkdtemp(prefix="hoop-cwd-"))
    root.chmod(0o755)
    (root / "inside").mkdir()
    (root / "a-file").write_text("x")
    yield root
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def gateway(stack: StackInfo, cwd_root: Path) -> Iterator[str]:
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    token = settings["vault"]["auth"]["token"]
    common: dict[str, Any] = {"allowed_dags": ["test_*"]}
    if ROOT:
        common["run_as_user"] = "nobody"
    quick = {"name": "sh_quick", "type": "custom", "timeout_seconds": 2, "kill_grace_seconds": 1}
    small = {
        "name": "sh_small",
        "type": "custom",
        "max_output_bytes": SMALL_CAP,
        "limits": {
            "address_space_bytes": MEMORY_LIMIT,
            "open_files": 64,
            "file_size_bytes": 1 << 20,
        },
        **common,
    }
    plain = {
        "name": "sh",
        "type": "custom",
        "env": {"LANG": "C.UTF-8", "FROM_CONNECTION": "conn-value"},
        "cwd_roots": [str(cwd_root)],
        **common,
    }
    connections = [*settings["connections"], {**quick, **common}, small, plain]
    env = {"HOOP_GATEWAY_VAULT__AUTH__TOKEN": token, "HOOP_GATEWAY_CANARY": CANARY}
    with extra_gateway(stack, "shell", env=env, connections=connections) as url:
        yield url


@pytest.fixture
def step_url(gateway: str) -> str:
    """The ``step`` fixture (tests/integration/conftest.py) calls this module's gateway."""
    return gateway


def run(
    client: StepClient,
    script: str,
    connection: str = "sh",
    *,
    env: dict[str, str] | None = None,
    client_args: list[str] | None = None,
    **extension: Any,
) -> httpx.Response:
    body: dict[str, Any] = {"connection": connection, "script": script}
    if env:
        body["env_vars"] = encode_env_vars(env)
    if client_args:
        body["client_args"] = client_args
    if extension:
        body["airflow_hoop"] = extension
    return client.http.post("/api/sessions", json=body, headers=client.headers())


def done(response: httpx.Response) -> ExecResponse:
    assert response.status_code == 200, response.text
    return ExecResponse.model_validate(response.json())


def result_of(stack: StackInfo, session_id: str) -> tuple[SessionIntent, SessionResult]:
    records = session_records(stack, session_id)
    assert [type(r.body) for r in records] == [SessionIntent, SessionResult], records
    intent, result = records[0].body, records[1].body
    assert isinstance(intent, SessionIntent) and isinstance(result, SessionResult)
    return intent, result


# -- the command and its record ----------------------------------------------------------------
def test_command_runs_and_both_records_say_what_happened(
    stack: StackInfo, step: StepClient
) -> None:
    res = done(run(step, "echo hello; echo to-stderr >&2; printf 'no newline'", env={"A": "1"}))
    assert res.output_status == "success" and res.exit_code == 0
    assert res.output == "hello\nto-stderr\nno newline"
    assert res.airflow_hoop and res.airflow_hoop.shell
    assert res.airflow_hoop.shell.last_line == "no newline"
    intent, result = result_of(stack, res.session_id)
    assert intent.script == "echo hello; echo to-stderr >&2; printf 'no newline'"
    assert intent.shell and intent.shell.argv == ["/bin/bash"]
    assert {"A", "PATH", "HOME", "FROM_CONNECTION"} <= set(intent.shell.env_names)
    assert "1" not in intent.shell.env_names and "conn-value" not in intent.model_dump_json()
    assert result.status == "success" and result.exit_code == 0 and result.duration_ms > 0
    assert result.output_sha256 == hashlib.sha256(res.output.encode()).hexdigest()
    assert result.shell and result.shell.output_bytes == len(res.output)
    assert result.shell.raw_output_sha256 == result.output_sha256 and result.shell.workdir_removed


def test_exit_codes_and_signals(stack: StackInfo, step: StepClient) -> None:
    failed = done(run(step, "echo before; exit 3"))
    assert (failed.output_status, failed.exit_code, failed.output) == ("failed", 3, "before\n")
    signalled = done(run(step, "kill -KILL $$"))
    assert signalled.exit_code == 128 + 9 and signalled.output_status == "failed"
    _, result = result_of(stack, signalled.session_id)
    assert result.shell and result.shell.signal == 9 and result.error == "killed by signal SIGKILL"


def test_client_args_are_appended_to_the_command(stack: StackInfo, step: StepClient) -> None:
    res = done(run(step, 'echo "$1|$2"', client_args=["-s", "--", "one", "two words"]))
    assert res.output == "one|two words\n"
    intent, _ = result_of(stack, res.session_id)
    assert intent.shell and intent.shell.argv == ["/bin/bash", "-s", "--", "one", "two words"]


def test_empty_script_is_a_recorded_no_op(stack: StackInfo, step: StepClient) -> None:
    res = done(run(step, ""))
    assert (res.output_status, res.exit_code, res.output) == ("success", 0, "")
    intent, result = result_of(stack, res.session_id)
    assert intent.script == "" and result.status == "success" and result.shell is not None


# -- isolation ---------------------------------------------------------------------------------
def test_command_sees_only_the_connection_and_request_environment(
    stack: StackInfo, step: StepClient
) -> None:
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    token = settings["vault"]["auth"]["token"]
    request_env = {"GREETING": "hi", "FROM_CONNECTION": "request tries to override"}
    res = done(run(step, "env", env=request_env))
    env = dict(line.split("=", 1) for line in res.output.splitlines())
    assert env["GREETING"] == "hi"
    assert env["FROM_CONNECTION"] == "conn-value"  # the connection wins, as in hoop
    expected = {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "FROM_CONNECTION",
        "GREETING",
        "PWD",
        "SHLVL",
        "_",
        "GATEWAY_RUN_MARK",  # the run's mark: finds what escaped with setsid (runners/strays.py)
    }
    assert set(env) == expected, set(env) ^ expected
    assert token not in res.output and CANARY not in res.output
    assert not any(k.startswith(("HOOP_GATEWAY", "VAULT", "AIRFLOW")) for k in env)


@pytest.mark.skipif(not ROOT, reason="run_as_user needs a root gateway")
def test_command_cannot_read_the_gateway_secrets_from_the_host(
    stack: StackInfo, step: StepClient
) -> None:
    """As ``run_as_user`` the command cannot read the gateway's /proc environ nor its files."""
    settings_file = Path(stack.run_dir) / "gateway-shell.yaml"
    token = yaml.safe_load(settings_file.read_text())["vault"]["auth"]["token"]
    script = (
        "id -un; for f in /proc/[0-9]*/environ; do cat $f 2>/dev/null | tr '\\0' '\\n'; done; "
        f"cat {settings_file} {stack.gateway_settings_path} 2>&1; true"
    )
    res = done(run(step, script))
    assert res.output.startswith("nobody\n")
    assert "No such file or directory" in res.output  # the sandbox has no view of them
    assert token not in res.output and CANARY not in res.output


def test_each_command_gets_a_fresh_working_directory_removed_after(
    stack: StackInfo, step: StepClient
) -> None:
    script = "pwd; echo data > f; mkdir -p d/e; chmod 000 d; echo $HOME $TMPDIR"
    first, second = done(run(step, script)), done(run(step, script))
    dir1, dir2 = first.output.splitlines()[0], second.output.splitlines()[0]
    assert dir1 != dir2 and first.output.splitlines()[1] == f"{dir1} {dir1}"
    assert not Path(dir1).exists() and not Path(dir2).exists()
    _, result = result_of(stack, first.session_id)
    assert result.shell and result.shell.workdir_removed


def test_cwd_is_a_checked_directory_on_the_gateway_host(
    stack: StackInfo, step: StepClient, cwd_root: Path
) -> None:
    res = done(run(step, "pwd; echo $HOME", cwd=str(cwd_root / "inside")))
    lines = res.output.splitlines()
    assert lines[0] == str(cwd_root / "inside") and lines[1] != lines[0]
    intent, _ = result_of(stack, res.session_id)
    assert intent.shell and intent.shell.cwd == str(cwd_root / "inside")
    before = ledger_count(stack)
    missing = run(step, "pwd", cwd=str(cwd_root / "nope"))
    assert missing.status_code == 400 and "Can not find the cwd" in missing.json()["message"]
    a_file = run(step, "pwd", cwd=str(cwd_root / "a-file"))
    assert a_file.status_code == 400 and "must be a directory" in a_file.json()["message"]
    assert ledger_count(stack) == before
    outside = run(step, "pwd", cwd="/etc")
    assert outside.status_code == 403, outside.text
    assert "outside the directories connection sh allows" in outside.json()["message"]
    refusal = ledger_records(stack)[-1]
    assert isinstance(refusal.body, PolicyRefused) and refusal.step == step.step


# -- stopping ----------------------------------------------------------------------------------
def test_timeout_stops_the_whole_process_group(stack: StackInfo, step: StepClient) -> None:
    started = time.monotonic()
    res = done(run(step, "pwd; sleep 300 & sleep 300", "sh_quick"))
    assert time.monotonic() - started < 2 + 1 + 3  # timeout + grace + slack
    workdir = res.output.splitlines()[0]
    assert wait_no_command(workdir, 1.0), "a process of the command outlived its timeout"
    assert res.exit_code == -2 and res.output_status == "failed"
    assert "[gateway] timed out after 2s" in res.output
    _, result = result_of(stack, res.session_id)
    assert result.error == "timed out after 2s" and result.shell and result.shell.timed_out


def test_kill_stops_the_process_group_within_5s(stack: StackInfo, step: StepClient) -> None:
    response = run(step, "trap '' TERM; pwd; sleep 300 & sleep 300", sync_seconds=0.5)
    assert response.status_code == 202, response.text
    session_id = response.json()["session_id"]
    partial = step.get(f"/api/sessions/{session_id}").json()
    workdir = (partial["output"] or "").strip()
    # bwrap, its init, bash and two sleeps (without a sandbox: bash and two sleeps)
    assert len(command_pids(workdir)) >= 3
    started = time.monotonic()
    assert step.post(f"/api/sessions/{session_id}/kill").status_code == 204
    info = SessionInfo.model_validate(wait_done(step, session_id, timeout=5))
    assert wait_no_command(workdir, 5.0 - (time.monotonic() - started))
    assert time.monotonic() - started < 5.0
    assert info.exit_code == -2 and (info.output or "").endswith("[gateway] session killed\n")
    _, result = result_of(stack, session_id)
    assert result.status == "killed"


def test_ending_the_step_kills_its_running_command(stack: StackInfo, gateway: str) -> None:
    with step_client(stack, url=gateway) as client:
        response = run(client, "pwd; sleep 300", sync_seconds=0.5)
        session_id = response.json()["session_id"]
        workdir = client.get(f"/api/sessions/{session_id}").json()["output"].strip()
        assert command_pids(workdir)
        assert client.end().status_code == 200
        assert wait_no_command(workdir, 5.0)
        _, result = result_of(stack, session_id)
        assert result.status == "killed"


def test_gateway_shutdown_stops_running_commands_and_records_it(stack: StackInfo) -> None:
    shell: dict[str, Any] = {"name": "sh_down", "type": "custom", "allowed_dags": ["test_*"]}
    if ROOT:
        shell["run_as_user"] = "nobody"
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    with step_client(stack) as client:
        connections = [*settings["connections"], shell]
        with extra_gateway(stack, "shell-down", connections=connections) as url:
            client.http.base_url = httpx.URL(url)
            response = run(client, "pwd; sleep 300", "sh_down", sync_seconds=0.5)
            assert response.status_code == 202, response.text
            session_id = response.json()["session_id"]
            workdir = client.get(f"/api/sessions/{session_id}").json()["output"].strip()
            assert command_pids(workdir)
        # The process is gone (SIGTERM to the gateway): it stopped the command and recorded it.
        assert wait_no_command(workdir, 2.0)
        _, result = result_of(stack, session_id)
        assert result.status == "interrupted" and result.exit_code == -2


# -- streaming ---------------------------------------------------------------------------------
def test_output_is_readable_while_the_command_runs(stack: StackInfo, step: StepClient) -> None:
    script = "for i in 1 2 3 4; do echo line $i; sleep 0.4; done; echo end"
    response = run(step, script, sync_seconds=0.1)
    assert response.status_code == 202, response.text
    session_id = response.json()["session_id"]
    offset, text, seen_running = 0, "", []
    while True:
        chunk = step.http.get(
            f"/api/sessions/{session_id}/result/stream",
            params={"offset": offset, "wait": 5},
            headers=step.headers(),
        )
        assert chunk.status_code == 200, chunk.text
        assert int(chunk.headers["X-Airflow-Hoop-Next-Offset"]) == offset + len(chunk.text)
        text += chunk.text
        offset += len(chunk.text)
        if chunk.headers["X-Airflow-Hoop-Status"] == "done":
            break
        if chunk.text:
            seen_running.append(chunk.text)
    assert text == "line 1\nline 2\nline 3\nline 4\nend\n"
    assert len(seen_running) >= 2, "the output arrived only at the end"
    plain = step.http.get(f"/api/sessions/{session_id}/result/stream", headers=step.headers())
    assert plain.text == text  # hoop's form: the whole output
    _, result = result_of(stack, session_id)
    assert result.output_sha256 == hashlib.sha256(text.encode()).hexdigest()


# -- bad output, bad commands ------------------------------------------------------------------
def test_binary_and_invalid_utf8_output(stack: StackInfo, step: StepClient) -> None:
    res = done(run(step, r"printf 'caf\xc3\xa9 \xff\xfe\x00end\n\x80'"))
    assert res.output == "café \\xff\\xfe\\x00end\n\\x80"
    _, result = result_of(stack, res.session_id)
    raw = b"caf\xc3\xa9 \xff\xfe\x00end\n\x80"
    assert result.shell and result.shell.raw_output_sha256 == hashlib.sha256(raw).hexdigest()
    latin = done(run(step, r"printf 'caf\xe9\n'", output_encoding="latin-1"))
    assert latin.output == "café\n"


def test_200_mb_of_output_is_truncated_and_the_ledger_says_so(
    stack: StackInfo, step: StepClient
) -> None:
    script = "head -c 200000000 /dev/zero | tr '\\0' a; echo; echo last line"
    started = time.monotonic()
    res = done(run(step, script, "sh_small"))
    elapsed = time.monotonic() - started
    assert res.exit_code == 0 and res.truncated is True
    assert len(res.output.encode()) == SMALL_CAP and set(res.output) == {"a"}
    assert res.airflow_hoop and res.airflow_hoop.shell
    assert res.airflow_hoop.shell.last_line == "last line"
    assert res.airflow_hoop.shell.output_bytes == 200_000_000 + 1 + 10
    _, result = result_of(stack, res.session_id)
    assert result.truncated is True and result.shell and result.shell.output_bytes == 200_000_011
    assert elapsed < 20, f"200 MB took {elapsed:.1f}s"


def test_memory_hog_hits_the_connection_limit(stack: StackInfo, step: StepClient) -> None:
    limits = done(run(step, "ulimit -v; ulimit -n; ulimit -f; ulimit -c", "sh_small"))
    assert limits.output.split() == [
        str(MEMORY_LIMIT // 1024),
        "64",
        str((1 << 20) // 1024),
        "0",
    ]  # bash counts KiB
    hog = done(run(step, "python3 -c 'x = bytearray(4 << 30)'; echo after $?", "sh_small"))
    assert hog.exit_code == 0 and "MemoryError" in hog.output and hog.output.endswith("after 1\n")
    hog = done(run(step, "exec python3 -c 'x = bytearray(4 << 30)'", "sh_small"))
    assert hog.exit_code == 1 and "MemoryError" in hog.output
    intent, result = result_of(stack, hog.session_id)
    assert intent.shell and intent.shell.limits["RLIMIT_AS"] == MEMORY_LIMIT
    assert result.status == "failed" and result.exit_code == 1


# -- Vault credentials -------------------------------------------------------------------------
def test_database_credentials_are_issued_masked_and_revoked(
    stack: StackInfo, gateway: str, admin_conn: Any
) -> None:
    with step_client(stack, url=gateway) as client:
        res = done(run(client, "psql -tAc 'select session_user'; echo pw=$PGPASSWORD", "ops_shell"))
        user = res.output.splitlines()[0]
        assert res.airflow_hoop and res.airflow_hoop.db_user == user
        assert res.output.splitlines()[1] == f"pw={MASK}"
        assert res.airflow_hoop.shell and res.airflow_hoop.shell.masked == 1
        intent, result = result_of(stack, res.session_id)
        assert intent.db_user == user and "PGPASSWORD" in (
            intent.shell.env_names if intent.shell else []
        )
        assert result.shell and result.shell.masked == 1
        assert client.end().json()["revoked_db_users"] == [user]
    assert (
        admin_conn().execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
        is None
    )
    bodies = [r.body for r in ledger_records(stack) if r.step == client.step]
    issued = [b for b in bodies if isinstance(b, CredentialIssued)]
    revoked = [b for b in bodies if isinstance(b, CredentialRevoked)]
    assert [(b.connection, b.db_user) for b in issued] == [("ops_shell", user)]
    assert [(b.db_user, b.reason) for b in revoked] == [(user, "step-end")]


# -- bad requests ------------------------------------------------------------------------------
BAD = {
    "parameters": ({"airflow_hoop": {"parameters": [1]}}, "parameters and autocommit"),
    "env key": ({"env_vars": {"NAME": "eA=="}}, "must start with envvar:"),
    "env value": ({"env_vars": {"envvar:A": "%%%"}}, "not base64"),
    "env NUL": ({"env_vars": {"envvar:A": base64.b64encode(b"a\0").decode()}}, "NUL"),
    "client_args NUL": ({"client_args": ["a\u0000"]}, "NUL"),
    "encoding": ({"airflow_hoop": {"output_encoding": "rot13"}}, "not a text encoding"),
    "relative cwd": ({"airflow_hoop": {"cwd": "tmp"}}, "not an absolute path"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_shell_requests_are_refused_before_anything_runs(
    stack: StackInfo, step: StepClient, case: str
) -> None:
    extra, words = BAD[case]
    before = ledger_count(stack)
    body = {"connection": "sh", "script": "echo never", **extra}
    response = step.http.post("/api/sessions", json=body, headers=step.headers())
    assert response.status_code == 400, response.text
    assert words in response.json()["message"] and "Fix:" in response.json()["message"]
    assert ledger_count(stack) == before


# -- pure parts --------------------------------------------------------------------------------
def test_masker_catches_a_secret_split_across_chunks() -> None:
    secret = "s3cr3t-Pa55"
    text = f"a{secret}b{secret}{secret}c"
    for cut in range(1, len(text)):
        masker = Masker([secret])
        out = masker.feed(text[:cut]) + masker.feed(text[cut:]) + masker.flush()
        assert out == f"a{MASK}b{MASK}{MASK}c" and masker.count == 3, cut
    # Only an end that could begin the secret waits for more output; the rest streams at once.
    masker = Masker([secret])
    assert masker.feed("1234\n") == "1234\n" and masker.feed("x s3c") == "x "


def test_capture_caps_by_utf8_bytes_without_splitting_a_character() -> None:
    capture = OutputCapture(encoding="utf-8", max_bytes=5, secrets=[])
    capture.feed("ééé".encode())  # 6 bytes
    capture.finish()
    assert capture.text() == "éé" and capture.truncated and capture.output_bytes == 6


def test_old_settings_files_without_type_are_postgres(stack: StackInfo) -> None:
    settings = GatewaySettings.load(stack.gateway_settings_path)
    assert isinstance(settings.connection("warehouse"), PostgresConnection)
    assert isinstance(settings.connection("ops_shell"), ShellConnection)
    raw = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    assert "type" not in raw["connections"][0]
