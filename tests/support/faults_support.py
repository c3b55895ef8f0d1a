"""Helpers of the fault tests: a throwaway stack per test module, gateway processes this test
owns (so it may SIGKILL them), and checks on the ledger, Vault leases and database users."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import yaml
from click.testing import CliRunner

from airflow_hoop.cli.audit import audit_verify
from airflow_hoop.devstack import stack as devstack
from airflow_hoop.devstack.models import StackInfo
from support.gateway_support import free_port, healthy

#: Short heartbeats so that a dead gateway is declared dead within seconds in the tests.
QUICK_RECOVERY = {"heartbeat_seconds": 0.5, "stale_after_seconds": 2.0}


@contextlib.contextmanager
def own_stack() -> Iterator[StackInfo]:
    """A stack of its own (Postgres, OpenBao, no gateway): the test may break any part of it.

    Its PostgreSQL commits durably: the devstack turns ``synchronous_commit`` off for speed,
    and a crash (``-m immediate``) would then lose the last committed ledger records, which
    is the throwaway cluster's choice, not the gateway's; a production database commits
    synchronously (docs/deploy.md).
    """
    info = devstack.up(gateway=False)
    try:
        with psycopg.connect(info.admin_dsn("postgres"), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_commit = on")
            conn.execute("SELECT pg_reload_conf()")
        yield info
    finally:
        devstack.down(info)


class GatewayProcess:
    """One gateway process started by the test: stopped by its Popen handle, never by name.

    ``wait=False`` returns at once (start several, then ``wait_healthy`` each: the machine
    starts them in parallel).
    """

    def __init__(
        self,
        stack: StackInfo,
        name: str,
        env: dict[str, str] | None = None,
        *,
        wait: bool = True,
        **overrides: Any,
    ) -> None:
        settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
        self.name = name
        self.port = free_port()
        settings.update(overrides, port=self.port)
        settings.setdefault("recovery", QUICK_RECOVERY)
        self.config = Path(stack.run_dir) / f"gateway-{name}.yaml"
        fd = os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(settings, fh)
        self.log = Path(stack.run_dir) / f"gateway-{name}.log"
        self.url = f"http://127.0.0.1:{self.port}"
        penv = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        penv.update(env or {})
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "airflow_hoop.gateway", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=penv,
            )
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not healthy(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"gateway {self.name} did not start: {tail}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def sigkill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def gateway(stack: StackInfo, name: str, **overrides: Any) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(stack, name, **overrides)
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def gateways(
    stack: StackInfo, *specs: tuple[str, dict[str, Any]]
) -> Iterator[list[GatewayProcess]]:
    """Several gateways started in parallel: ``(name, keyword arguments of GatewayProcess)``."""
    procs: list[GatewayProcess] = []
    try:
        for name, kwargs in specs:
            procs.append(GatewayProcess(stack, name, wait=False, **kwargs))
        for proc in procs:
            proc.wait_healthy()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def faked_clock(offset_seconds: int) -> dict[str, str]:
    """Environment that runs a process with its wall clock shifted (libfaketime, LD_PRELOAD).

    Only the wall clock: the monotonic clock stays real, so timeouts and sleeps behave.
    """
    import libfaketime

    _, env = libfaketime.get_reload_information()
    env = {k: str(v) for k, v in env.items()}
    env["DONT_FAKE_MONOTONIC"] = "1"
    env["FAKETIME"] = f"{offset_seconds:+d}"
    return env


def at(stack: StackInfo, url: str) -> StackInfo:
    """The stack as seen through gateway ``url`` (for the ledger helpers of gateway_support)."""
    return stack.model_copy(update={"gateway_url": url})


def gateway_db(stack: StackInfo) -> psycopg.Connection[Any]:
    return psycopg.connect(stack.admin_dsn(stack.gateway_db), autocommit=True)


def warehouse_db(stack: StackInfo) -> psycopg.Connection[Any]:
    return psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True)


def role_exists(stack: StackInfo, name: str) -> bool:
    with warehouse_db(stack) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            is not None
        )


def backends_of(stack: StackInfo, user: str) -> int:
    with warehouse_db(stack) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (user,)
        ).fetchone()
        assert row is not None
        return int(row[0])


def wait_until(what: str, check: Any, timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout:.0f}s")
        time.sleep(interval)


def verify_ledger(stack: StackInfo, url: str) -> str:
    """``airflow-hoop audit verify`` against a live gateway; returns its output (exit 0)."""
    # The stack's checkpoint key and anchor, read without trusting the gateway.
    info = at(stack, url)
    run_dir = Path(stack.run_dir) / f"verify-{time.monotonic_ns()}"
    run_dir.mkdir()
    fd = os.open(run_dir / "stack.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:  # it holds the stack's root token
        fh.write(info.model_dump_json())
    result = CliRunner().invoke(audit_verify, ["--stack", str(run_dir)])
    assert result.exit_code == 0, result.output
    return result.output


def start_running(step: Any, script: str, connection: str = "warehouse", sync: float = 0.3) -> str:
    """Start a statement that outlives the sync window (202); returns its session id."""
    body = {"connection": connection, "script": script, "airflow_hoop": {"sync_seconds": sync}}
    answer = step.http.post("/api/sessions", json=body, headers=step.headers())
    assert answer.status_code == 202, answer.text
    return str(answer.json()["session_id"])
