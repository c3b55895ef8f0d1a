"""``airflow-hoop ui`` (``make ui``): the embedded stack and a real Airflow, ready to click through.

Starts the stack (PostgreSQL, OpenBao, gateway) and Airflow's api-server, scheduler,
dag-processor and triggerer with the plugin and the example DAGs, triggers the examples, waits
until the approval example's sensor is deferred with its review open, and prints the URL and
the logins (passwords pre-written to the simple auth manager's file). Then it waits: Ctrl-C
(SIGINT) or SIGTERM stops every process it started, by PID, and removes the stack's directory.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import httpx
from pydantic import BaseModel
from rich.console import Console

from airflow_hoop.devstack import airflow_env, openbao, stack
from airflow_hoop.devstack.airflow_services import AirflowServices
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.errors import ConfigError

#: Triggered on start; governed_approval waits for an approval; governed_agent_seed triggers
#: governed_agent, whose agent's UPDATE waits for one too (when the agents extra is installed).
EXAMPLE_RUNS = ("governed_etl", "governed_shell", "governed_agent_seed", "governed_approval")
APPROVAL_DAG = "governed_approval"
APPROVAL_SENSOR = "approve_refunds"
DEFAULT_PORT = 8080
#: The user who may approve (admin triggered the runs, and may not approve its own run).
APPROVER = "alice"
_READY_TIMEOUT_S = 240.0


def _example_runs() -> tuple[str, ...]:
    """EXAMPLE_RUNS, without the agent example when the agents extra is not installed."""
    import importlib.util

    if importlib.util.find_spec("airflow.providers.common.ai") is not None:
        return EXAMPLE_RUNS
    return tuple(d for d in EXAMPLE_RUNS if not d.startswith("governed_agent"))


class UiReady(BaseModel):
    """What ``airflow-hoop ui`` printed once ready (also the test's view of it)."""

    url: str
    users: dict[str, str]
    runs: dict[str, str]
    review_id: str
    seconds_to_ready: float


def pick_port(requested: int | None) -> int:
    """``requested`` if given (0: any free port), else 8080 when free, else any free port."""
    if requested:
        return requested
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if requested is None:
            with contextlib.suppress(OSError):
                s.bind(("127.0.0.1", DEFAULT_PORT))
                return DEFAULT_PORT
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Stop(Exception):
    """Raised from the SIGINT/SIGTERM handler: leave the wait and clean up."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM end the session (SIGTERM too: a supervisor or a test may send it)."""
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """Cleanup must finish: a second Ctrl-C while stopping would leave processes behind."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_for_review(services: AirflowServices, info: StackInfo, run_id: str, timeout: float) -> str:
    """The id of the open review the approval example's sensor is waiting on."""
    services.wait_state(APPROVAL_DAG, run_id, APPROVAL_SENSOR, {"deferred"}, timeout=timeout)
    deadline = time.monotonic() + 30
    with httpx.Client(
        base_url=info.gateway_url,
        headers={"Authorization": f"Bearer {info.auditor_api_key}"},
        trust_env=False,
        timeout=10,
    ) as gateway:
        while time.monotonic() < deadline:
            reviews = gateway.get("/api/reviews", params={"run_id": run_id}).json()
            pending = [r for r in reviews if r.get("status") == "PENDING"]
            if pending:
                return str(pending[0]["id"])
            time.sleep(0.5)
    raise ConfigError(
        f"the sensor of {APPROVAL_DAG}/{run_id} is deferred but no pending review appeared",
        f"see the gateway log {info.gateway_log}",
    )


def start(console: Console, port: int | None) -> tuple[StackInfo, AirflowServices, UiReady]:
    """Stack + Airflow + triggered example runs; stops what it started if anything fails."""
    started = time.monotonic()
    with console.status("Starting the embedded stack (PostgreSQL, OpenBao, gateway)..."):
        info = stack.up()
    console.print(f"Stack up in {time.monotonic() - started:.0f} s ({info.run_dir})")
    services = AirflowServices(
        Path(info.run_dir) / "airflow", info, airflow_env.EXAMPLE_DAGS, port=pick_port(port)
    )
    try:
        with console.status(
            "Starting Airflow (api-server, scheduler, dag-processor, triggerer)..."
        ):
            services.start(timeout=_READY_TIMEOUT_S)
        console.print(f"Airflow healthy after {time.monotonic() - started:.0f} s")
        runs: dict[str, str] = {}
        with console.status("Waiting for the example DAGs to be parsed, then triggering them..."):
            for dag_id in _example_runs():
                services.wait_dag(dag_id, timeout=_READY_TIMEOUT_S)
                runs[dag_id] = services.trigger(dag_id)
        with console.status(f"Waiting for {APPROVAL_DAG} to ask for an approval..."):
            review_id = wait_for_review(services, info, runs[APPROVAL_DAG], _READY_TIMEOUT_S)
    except BaseException:
        with _shielded():
            stop(console, info, services)
        raise
    ready = UiReady(
        url=services.url,
        users=dict(services.passwords),
        runs=runs,
        review_id=review_id,
        seconds_to_ready=round(time.monotonic() - started, 1),
    )
    return info, services, ready


def print_ready(console: Console, ready: UiReady) -> None:
    approval = ready.runs[APPROVAL_DAG]
    console.print(
        f"\n[bold green]Ready in {ready.seconds_to_ready:.0f} s.[/bold green] "
        f"Airflow UI: {ready.url}\n",
        highlight=False,
    )
    # markup off for the secrets and ids: rich would eat "[...]" in them.
    for user, role in (("admin", "triggered the runs"), (APPROVER, "may approve")):
        console.print(
            f"  login: {user} / {ready.users[user]}   ({role})", markup=False, highlight=False
        )
    console.print(
        f"\n  Waiting for approval: {APPROVAL_DAG} run {approval}, task {APPROVAL_SENSOR}.\n"
        f"  Log in as {APPROVER}, open {ready.url}/plugin/hoop-approvals (or the task's Approvals "
        "tab) and approve it; apply_refunds then runs.\n"
        "  governed_agent (an LLM agent, scripted): its proposed UPDATE waits on the Approvals "
        "tab of ask_warehouse; approving it resumes the agent.\n"
        "  The Access audit tab of any task of governed_etl / governed_shell / governed_agent shows "
        "what it ran.\n"
        "\nPress Ctrl-C to stop everything.",
        markup=False,
        highlight=False,
    )


def stop(console: Console, info: StackInfo, services: AirflowServices) -> None:
    """Stop Airflow's processes, then the stack's, by PID; remove the stack's directory."""
    console.print("Stopping Airflow and the stack (takes a few seconds)...")
    try:
        services.stop()
    finally:
        stack.down(info)
    console.print("Stopped.")


def run_ui(console: Console, *, port: int | None = None) -> int:
    """Start everything, print how to log in, wait for Ctrl-C, stop everything."""
    with _stop_on_signals():
        try:
            info, services, ready = start(console, port)
        except _Stop:
            console.print("Interrupted while starting; everything started was stopped.")
            return 130
        try:
            print_ready(console, ready)
            while True:
                for name, proc in services.procs.items():
                    if proc.poll() is not None:
                        # Its log goes with the stack's directory: show the end of it now.
                        raise ConfigError(
                            f"airflow {name} exited ({proc.returncode}); its log ends with: "
                            f"{openbao.tail(services.logs / f'{name}.log')}",
                            "fix the error above and run `airflow-hoop ui` again",
                        )
                time.sleep(1.0)
        except _Stop:
            pass
        finally:
            with _shielded():
                stop(console, info, services)
    return 0
