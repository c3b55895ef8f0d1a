"""SIGHUP reloads a real gateway process's connections: applied without a restart, recorded
in the ledger with the settings' digest; a bad file keeps the old settings and the log says
why; a step cannot make the gateway reload. ``airflow-hoop stack allow`` on the stack."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from support.gateway_support import (
    CONNECTION,
    GatewayProcess,
    gateway_process,
    ledger_records,
    new_step,
    step_client,
)

from airflow_hoop.cli.main import main
from airflow_hoop.devstack.models import StackInfo, write_private
from airflow_hoop.gateway.settings import GatewaySettings
from airflow_hoop.gateway.settings_reload import settings_digest
from airflow_hoop.ledger.records import SettingsChanged


@pytest.fixture(scope="module")
def gateway(stack: StackInfo) -> Iterator[GatewayProcess]:
    with gateway_process(stack, "reload") as process:
        yield process


def _edit(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    write_private(path, yaml.safe_dump(data, sort_keys=False))


def _allow(glob: str) -> Any:
    def change(data: dict[str, Any]) -> None:
        for conn in data["connections"]:
            if conn["name"] == CONNECTION:
                conn["allowed_dags"].append(glob)

    return change


def _hup_and_wait(gateway: GatewayProcess, marker: str) -> str:
    """SIGHUP, then the gateway's next log line about the reload (must contain ``marker``)."""
    offset = gateway.log_path.stat().st_size
    gateway.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = gateway.log_path.read_bytes()[offset:].decode(errors="replace")
        lines = [line for line in text.splitlines() if "settings reload" in line]
        if lines:
            assert marker in lines[0], lines
            return lines[0]
        time.sleep(0.05)
    raise AssertionError(f"no reload line in the gateway log: {text[-2000:]}")


def _runs(stack: StackInfo, gateway: GatewayProcess, dag: str) -> int:
    with step_client(stack, new_step(dag), gateway.url) as client:
        return client.exec("SELECT 1").status_code


def _changes(stack: StackInfo) -> list[SettingsChanged]:
    return [r.body for r in ledger_records(stack) if isinstance(r.body, SettingsChanged)]


def test_sighup_applies_new_connections_without_restart_and_records_it(
    stack: StackInfo, gateway: GatewayProcess
) -> None:
    assert _runs(stack, gateway, "reload_probe") == 403
    before = len(_changes(stack))
    _edit(gateway.settings_path, _allow("reload_*"))
    _hup_and_wait(gateway, "settings reloaded from")
    assert gateway.proc.poll() is None  # the same process, not a restart
    assert _runs(stack, gateway, "reload_probe") == 200
    changes = _changes(stack)[before:]
    assert len(changes) == 1
    change = changes[0]
    assert change.changed == [f"connections.{CONNECTION}.allowed_dags"]
    # A reviewer holding the file (and the gateway's environment) computes the same digest.
    assert change.settings_sha256 == settings_digest(GatewaySettings.load(gateway.settings_path))
    assert change.previous_sha256 != change.settings_sha256
    assert f"-{gateway.proc.pid}-" in change.instance


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (lambda data: data["connections"][0].update(allowed_dags=5), "allowed_dags"),
        (lambda data: data.update(port=1), "port changed, which only a restart applies"),
        (lambda data: data["connections"].append({"name": "x"}), "connections.2"),
    ],
)
def test_a_bad_file_keeps_the_old_settings_and_says_why(
    stack: StackInfo, gateway: GatewayProcess, bad: Any, why: str
) -> None:
    good = gateway.settings_path.read_text()
    _edit(gateway.settings_path, _allow("bad_reload_*"))
    _hup_and_wait(gateway, "settings reloaded from")
    before = len(_changes(stack))

    def revoke_and_break(data: dict[str, Any]) -> None:
        # The bad file also takes the DAG away again: had it applied, the DAG would be refused.
        data["connections"][0]["allowed_dags"].remove("bad_reload_*")
        bad(data)

    _edit(gateway.settings_path, revoke_and_break)
    line = _hup_and_wait(gateway, "settings reload refused, the old settings stay")
    assert why in line
    assert _runs(stack, gateway, "bad_reload_probe") == 200
    assert len(_changes(stack)) == before
    gateway.settings_path.write_text(good)
    _hup_and_wait(gateway, "settings reloaded from")


def test_a_step_cannot_make_the_gateway_reload(stack: StackInfo, gateway: GatewayProcess) -> None:
    """The file changes, but no SIGHUP: nothing a step can send over HTTP applies it, and a
    shell step cannot see (so cannot signal) the gateway's process, nor read its file."""
    before = len(_changes(stack))
    offset = gateway.log_path.stat().st_size
    _edit(gateway.settings_path, _allow("sneaky_*"))
    pid = gateway.proc.pid
    with step_client(stack, new_step("test_reload_shell"), gateway.url) as client:
        for path in ("/api/airflow-hoop/reload", "/api/airflow-hoop/settings", "/-/reload"):
            assert client.post(path).status_code in (401, 403, 404, 405)
        script = (
            f"kill -HUP {pid}; echo kill=$?; cat {gateway.settings_path} >/dev/null 2>&1; "
            "echo cat=$?"
        )
        body = client.exec(script, connection="ops_shell").json()
    assert "kill=1" in body["output"] and "cat=1" in body["output"], body
    time.sleep(1.0)  # a reload, had one been triggered, logs well within this
    assert "settings reload" not in gateway.log_path.read_bytes()[offset:].decode()
    assert _runs(stack, gateway, "sneaky_probe") == 403
    assert len(_changes(stack)) == before
    assert gateway.proc.poll() is None


def test_stack_allow_reloads_the_stack_gateway(stack: StackInfo) -> None:
    dag = "stack_allow_probe"
    with step_client(stack, new_step(dag)) as client:
        assert client.exec("SELECT 1").status_code == 403
    before = len(_changes(stack))
    result = CliRunner().invoke(main, ["stack", "allow", "stack_allow_*", "--stack", stack.run_dir])
    assert result.exit_code == 0, result.output
    assert "settings reloaded from" in result.output
    with step_client(stack, new_step(dag)) as client:
        assert client.exec("SELECT 1").status_code == 200
    changes = _changes(stack)[before:]
    assert [c.changed for c in changes] == [
        ["connections.ops_shell.allowed_dags", f"connections.{CONNECTION}.allowed_dags"]
    ]
    again = CliRunner().invoke(main, ["stack", "allow", "stack_allow_*", "--stack", stack.run_dir])
    assert again.exit_code == 0 and "already allowed" in again.output
