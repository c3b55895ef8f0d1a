"""`airflow-hoop ui` (what `make ui` runs), as a newcomer would use it, with real processes.

Starts the command as a subprocess, waits for the printed URL and logins, logs in through
Airflow's API with them, sees the triggered example runs and the approval waiting, approves it
as the printed approver through the plugin's endpoint, then sends SIGINT and checks that every
process the command started is gone and its ports are free.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import pytest

from airflow_hoop.devstack.models import STACK_FILE, StackInfo
from airflow_hoop.devstack.ui_session import EXAMPLE_RUNS

READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 90.0


class _Output:
    """The command's output, read line by line in a thread (a pipe read would block)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, pattern: str, timeout: float) -> str:
        """Lines until one matches ``pattern``: that line."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + self.text())

    def rest(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(AssertionError):
            self.until(r"(?!x)x", timeout)  # drain to the end (matches nothing)

    def text(self) -> str:
        return "\n".join(self.lines)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _stack_dir(out: _Output) -> Path:
    for line in out.lines:
        match = re.search(r"Stack up in \d+ s \((.+)\)", line)
        if match:
            return Path(match.group(1))
    raise AssertionError("no stack directory printed:\n" + out.text())


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _started_processes(stack_info: StackInfo, ui_pid: int) -> list[psutil.Process]:
    """Every process the command started: its children (Airflow, bao, gateway) and theirs.

    The stack's processes run in their own sessions but are still children of the command;
    Postgres is started by pg_ctl (it daemonizes), so its postmaster is found by its data dir.
    """
    procs = _descendants(ui_pid)
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if stack_info.pg_data in cmdline and proc not in procs:
            procs.append(proc)
    return procs


@pytest.mark.timeout(600)
def test_make_ui_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["NO_PROXY"] = "*"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_hoop.cli.main", "ui", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    out = _Output(proc)
    procs: list[psutil.Process] = []
    ports: list[int] = []
    try:
        url_line = out.until(r"Airflow UI: http://", READY_TIMEOUT_S)
        ready_after = time.monotonic() - started
        url = re.search(r"(http://127\.0\.0\.1:\d+)", url_line).group(1)  # type: ignore[union-attr]
        out.until(r"Press Ctrl-C", 10)
        logins = dict(re.findall(r"login: (\w+) / (\S+)", out.text()))
        assert set(logins) >= {"admin", "alice"}, out.text()
        info = StackInfo.load(_stack_dir(out))
        procs = _started_processes(info, proc.pid)
        ports = [int(url.rsplit(":", 1)[1]), info.pg_port, int(info.gateway_url.rsplit(":", 1)[1])]
        ports.append(int(info.bao_addr.rsplit(":", 1)[1]))

        # A newcomer's view: the printed credentials log in; the runs are there.
        def login(user: str) -> httpx.Client:
            token = httpx.post(
                f"{url}/auth/token",
                json={"username": user, "password": logins[user]},
                timeout=10,
            )
            assert token.status_code in (200, 201), token.text
            return httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {token.json()['access_token']}"},
                timeout=30,
                trust_env=False,
            )

        with login("admin") as admin:
            runs = admin.get("/api/v2/dags/governed_approval/dagRuns").json()["dag_runs"]
            assert len(runs) == 1, runs
            run_id = runs[0]["dag_run_id"]
            sensor = admin.get(
                f"/api/v2/dags/governed_approval/dagRuns/{run_id}/taskInstances/approve_refunds"
            ).json()
            assert sensor["state"] == "deferred", sensor
            example_runs = {}
            for dag_id in EXAMPLE_RUNS:
                listed = admin.get(f"/api/v2/dags/{dag_id}/dagRuns").json()
                assert listed["total_entries"] == 1, (dag_id, listed)
                example_runs[dag_id] = listed["dag_runs"][0]["dag_run_id"]

        # The waiting approval is on its tab; the printed approver approves it there.
        with login("alice") as alice:
            tab = alice.get(
                f"/hoop/approvals/ti/governed_approval/{run_id}/apply_refunds",
                params={"map_index": -1},
            )
            assert tab.status_code == 200, tab.text
            review = _pending_review(info, run_id)
            assert review["id"] in tab.text
            decided = alice.post(
                f"/hoop/approvals/decide/governed_approval/{review['id']}",
                data={
                    "decision": "APPROVED",
                    "reason": "looks right",
                    "command_sha256": review["airflow_hoop"]["command_sha256"],
                },
                headers={"Origin": url},
                follow_redirects=False,
            )
            assert decided.status_code == 303, decided.text
            _wait_ti(alice, run_id, "apply_refunds", "success", 120)

        # Every showcase run succeeds as `make ui` triggers it (no logical date: `ds` is
        # undefined there), so the Audit tabs the README points to have something to show.
        with login("admin") as admin:
            for dag_id, example_run in example_runs.items():
                _wait_run(admin, dag_id, example_run, "success", 180)
        print(f"time to ready: {ready_after:.1f} s")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()  # the assertion below reports it
            raise
        finally:
            out.rest()
    assert proc.returncode == 0, out.text()
    assert "Stopped." in out.text()
    alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert procs and not alive, f"left running: {alive}"
    assert all(_port_free(p) for p in ports), ports
    assert not (Path(info.run_dir) / STACK_FILE).exists()


def _pending_review(info: StackInfo, run_id: str) -> dict[str, Any]:
    with httpx.Client(
        base_url=info.gateway_url,
        headers={"Authorization": f"Bearer {info.auditor_api_key}"},
        trust_env=False,
        timeout=10,
    ) as gateway:
        reviews = gateway.get("/api/reviews", params={"run_id": run_id}).json()
    pending = [r for r in reviews if r["status"] == "PENDING"]
    assert len(pending) == 1, json.dumps(reviews)
    return dict(pending[0])


def _wait_run(api: httpx.Client, dag_id: str, run_id: str, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    got: dict[str, Any] = {}
    while time.monotonic() < deadline:
        got = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
        if got.get("state") in (state, "failed"):
            break
        time.sleep(1)
    if got.get("state") != state:
        tasks = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()
        states = {t["task_id"]: t["state"] for t in tasks.get("task_instances", [])}
        raise AssertionError(f"{dag_id} run {run_id} is {got.get('state')}: {states}")


def _wait_ti(api: httpx.Client, run_id: str, task_id: str, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = api.get(
            f"/api/v2/dags/governed_approval/dagRuns/{run_id}/taskInstances/{task_id}"
        ).json()
        if got.get("state") == state:
            return
        time.sleep(1)
    raise AssertionError(f"{task_id} is {got}, not {state}")
