"""No secret of the embedded stack on a command line, nor readable by another Unix user.

A hostile shell step runs as another user (``nobody`` when the stack runs as root). It reads
``/proc/<pid>/cmdline`` and ``/proc/<pid>/environ`` of every process the stack started; it must
find none of the stack's secrets. The secrets are gathered here as the stack's owner: the stack
info, gateway.yaml and the raw OpenBao audit log (every password and token Vault handled).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_hoop.devstack import postgres
from airflow_hoop.devstack import stack as devstack
from airflow_hoop.devstack.models import STACK_FILE, StackInfo

OTHER_USER = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
CANARY = "canary-" + os.urandom(8).hex()

# Run as the other user: the cmdline and environ of each PID on stdin, None when unreadable.
_READER = """
import json, sys
out = {}
for pid in json.load(sys.stdin):
    entry = {}
    for name in ("cmdline", "environ"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as fh:
                entry[name] = fh.read().decode("utf-8", "replace")
        except OSError:
            entry[name] = None
    out[pid] = entry
json.dump(out, sys.stdout)
"""


def _children_of() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat_line.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(roots: list[int]) -> list[int]:
    children = _children_of()
    seen: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.append(pid)
            todo.extend(children.get(pid, []))
    return seen


def _strings(node: Any) -> Iterator[tuple[str, str]]:
    """(key, value) of every string in a JSON document, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                yield str(key), value
            else:
                yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _secrets(stack: StackInfo) -> dict[str, str]:
    """Every secret value of the stack, by where it came from (values of 16+ characters)."""
    found = {
        "bao root token": stack.bao_root_token,
        "auditor API key": stack.auditor_api_key,
        "approver API key": stack.approver_api_key or "",
        "reviewer API key": stack.reviewer_api_key or "",
    }
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    found["gateway database password"] = settings["database_dsn"].split("password=")[1].split()[0]
    found["gateway vault token"] = settings["vault"]["auth"]["token"]
    pem = Path(stack.workload_key_path).read_text().splitlines()
    found["workload key"] = "".join(line for line in pem if not line.startswith("-----"))[:40]
    assert stack.bao_audit_log is not None
    for n, line in enumerate(Path(stack.bao_audit_log).read_text().splitlines()):
        for key, value in _strings(json.loads(line)):
            if ("password" in key or "token" in key or key == "secret_id") and len(value) >= 16:
                found[f"audit log line {n} {key}"] = value
    assert any("password" in name for name in found if name.startswith("audit")), (
        "the raw audit log should hold the database admin password Vault was configured with"
    )
    return {name: value for name, value in found.items() if len(value) >= 16}


def _read_as_other_user(pids: list[int]) -> dict[str, dict[str, str | None]]:
    proc = subprocess.run(
        [*OTHER_USER, sys.executable, "-I", "-c", _READER],
        input=json.dumps(pids),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd="/",
    )
    result: dict[str, dict[str, str | None]] = json.loads(proc.stdout)
    return result


@pytest.fixture
def canary() -> Iterator[int]:
    """A process of the stack's owner with a known string on its command line: proves the
    reader sees what another user can see (else a reader that reads nothing would pass)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", CANARY], env={"CANARY": CANARY}
    )
    yield proc.pid
    proc.kill()
    proc.wait()


def _leaks_seen_by_another_user(stack: StackInfo, canary: int) -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to read /proc as another user (nobody)")
    roots = [stack.bao_pid, stack.gateway_pid or 0, postgres.postmaster_pid(Path(stack.pg_data))]
    assert all(roots), f"every process of the stack is running: {roots}"
    pids = [*_descendants([pid for pid in roots if pid]), canary]
    seen = _read_as_other_user(pids)
    assert CANARY in (seen[str(canary)]["cmdline"] or ""), "the reader must see command lines"
    assert seen[str(canary)]["environ"] is None, "another user must not read a process's environ"
    bao_cmdline = seen[str(stack.bao_pid)]["cmdline"] or ""
    assert "server" in bao_cmdline and "-dev" in bao_cmdline

    secrets = _secrets(stack)
    return [
        f"{name} in /proc/{pid}/{part}"
        for pid, parts in seen.items()
        for part, text in parts.items()
        if text
        for name, value in secrets.items()
        if value in text
    ]


def test_no_secret_in_the_argv_or_environment_another_user_can_read(
    stack: StackInfo, canary: int
) -> None:
    assert _leaks_seen_by_another_user(stack, canary) == []


def test_nor_of_a_gateway_with_worker_processes(canary: int) -> None:
    """uvicorn's workers are children of the gateway: found through /proc's parent links."""
    info = devstack.up(gateway=False, vault_audit_raw=True)
    try:
        devstack.start_gateway(info, workers=2)
        assert info.gateway_pid is not None
        workers = [p for p in _descendants([info.gateway_pid]) if p != info.gateway_pid]
        assert len(workers) >= 2, workers
        assert _leaks_seen_by_another_user(info, canary) == []
    finally:
        devstack.down(info)


def test_files_holding_secrets_are_owner_only(stack: StackInfo) -> None:
    run_dir = Path(stack.run_dir)
    for path in (
        Path(stack.gateway_settings_path),
        run_dir / STACK_FILE,
        Path(stack.workload_key_path),
        run_dir / "bao.log",  # dev mode prints the root token
        Path(stack.gateway_log),
    ):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, f"{path} is {oct(mode)}, must be 0600"
