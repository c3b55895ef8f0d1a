"""``airflow-hoop stack allow DAG_GLOB``: let more DAGs use the embedded stack's connections.

Edits ``allowed_dags`` in the stack's ``gateway.yaml`` (validated as the gateway would load it,
written atomically, 0600), then sends SIGHUP to the stack's own gateway process, which reloads
its connections without a restart and records the change in the ledger
(``gateway/settings_reload.py``). The gateway's log says whether the reload was applied; this
waits for that line and reports it.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from airflow_hoop.devstack import openbao
from airflow_hoop.devstack.models import StackInfo, write_private
from airflow_hoop.errors import ConfigError
from airflow_hoop.gateway.settings import GatewaySettings

#: What the gateway logs after a SIGHUP (``settings_reload.py``).
_APPLIED = "settings reloaded from"
_REFUSED = "settings reload refused"
_WAIT_SECONDS = 15.0


@dataclass(frozen=True)
class AllowOutcome:
    """What ``allow`` changed, and what the gateway said about the reload."""

    connections: list[str]
    already: bool
    reloaded: bool
    gateway_says: str


def allow(run_dir: str | Path, dag_glob: str, connection: str | None = None) -> AllowOutcome:
    """Add ``dag_glob`` to ``allowed_dags`` of every connection (or only ``connection``),
    then have the running gateway reload. Raises ConfigError naming what is wrong."""
    glob = dag_glob.strip()
    if not glob or any(ch.isspace() or not ch.isprintable() for ch in glob):
        raise ConfigError(
            f"{dag_glob!r} is not a DAG id glob", "pass a glob such as 'my_etl_*' (no spaces)"
        )
    info = StackInfo.load(run_dir)
    path = Path(info.gateway_settings_path)
    data = yaml.safe_load(path.read_text()) or {}
    targets = [c for c in data.get("connections", []) if connection in (None, c.get("name"))]
    if not targets:
        names = ", ".join(c.get("name", "?") for c in data.get("connections", []))
        raise ConfigError(
            f"the stack's gateway has no connection {connection!r}",
            f"name one of: {names}",
        )
    changed = [c["name"] for c in targets if glob not in c.setdefault("allowed_dags", [])]
    for conn in targets:
        if glob not in conn["allowed_dags"]:
            conn["allowed_dags"].append(glob)
    if not changed:
        return AllowOutcome([c["name"] for c in targets], True, False, "nothing to change")
    text = yaml.safe_dump(data, sort_keys=False)
    _validate(path, text)
    tmp = path.with_name(f".{path.name}.new")
    write_private(tmp, text)
    os.replace(tmp, path)  # the gateway never reads half a file
    reloaded, says = _signal_and_wait(info)
    return AllowOutcome(changed, False, reloaded, says)


def _validate(path: Path, text: str) -> None:
    """The new file as the gateway would load it (same environment), before it is written."""
    check = path.with_name(f".{path.name}.check")
    write_private(check, text)
    try:
        GatewaySettings.load(check)
    finally:
        check.unlink(missing_ok=True)


def _signal_and_wait(info: StackInfo) -> tuple[bool, str]:
    """SIGHUP to the stack's gateway (checked by its command line), then its log's answer."""
    pid = info.gateway_pid
    if not pid or not openbao.is_running(pid):
        return False, "the stack's gateway is not running: it loads the file when it starts"
    if info.gateway_settings_path not in openbao.process_cmdline(pid):
        # A PID reused by another process since stack.json was written: never signal it.
        return False, f"process {pid} is not this stack's gateway; restart the gateway"
    log = Path(info.gateway_log)
    offset = log.stat().st_size if log.exists() else 0
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + _WAIT_SECONDS
    while time.monotonic() < deadline:
        for line in _new_lines(log, offset):
            if _APPLIED in line:
                return True, line.strip()
            if _REFUSED in line:
                return False, line.strip()
        time.sleep(0.1)
    return False, f"no answer in {log} within {_WAIT_SECONDS:.0f} s (several workers restart)"


def _new_lines(log: Path, offset: int) -> list[str]:
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace").splitlines()
    except OSError:
        return []
