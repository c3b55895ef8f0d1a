"""Processes a shell command left behind, found by a mark in their environment, and killed.

A command leads a process group of its own, and the group is killed when the command ends. A
process that calls ``setsid`` (or ``setpgid``) leaves that group, and once its parent exits it
is no longer a descendant of anything the gateway knows. What it keeps is its environment: every
command gets ``GATEWAY_RUN_MARK=<gateway instance>:<run>``, inherited by everything it
starts, and ``/proc/<pid>/environ`` still shows it after ``setsid``. When the command ends the
gateway kills every process of the command's user that carries the run's mark; the recovery
sweep kills those carrying the mark of a gateway instance that died.

The bound (docs/faults.md): a process that both leaves the session and replaces its
environment (``setsid env -i ...``) carries no mark. Only a cgroup per command closes that gap
(cgroup v2 with delegation, e.g. ``systemd-run --scope``); that is not available everywhere the
gateway runs, so it is not assumed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Callable
from pathlib import Path

from airflow_hoop.gateway.db.store import instance_id

MARK_VARIABLE = "GATEWAY_RUN_MARK"
_PROC = Path("/proc")


def new_mark() -> str:
    """A mark for one command run: ``<instance id>:<random>``."""
    return f"{instance_id()}:{secrets.token_hex(8)}"


def kill_marked(
    prefix: str,
    uid: int | None = None,
    since_pid: int | None = None,
    sig: int = signal.SIGKILL,
) -> list[int]:
    """Send ``sig`` to every process whose mark starts with ``prefix``; returns their PIDs.

    ``uid`` limits the scan to processes of that user (the command's). ``since_pid`` (the
    command's own PID) limits it to PIDs handed out after it: a command's descendants are
    created after it and Linux hands out PIDs in order (wrapping at ``pid_max``), so only
    processes created while the command ran are read, not every process of the host. Never
    kills this process.
    """
    needle = f"{MARK_VARIABLE}={prefix}".encode()
    me = os.getpid()
    created = _created_since(since_pid) if since_pid is not None else None
    killed = []
    for pid in _pids():
        if pid == me or (created is not None and not created(pid)):
            continue
        if uid is not None:
            try:
                if os.stat(f"/proc/{pid}").st_uid != uid:
                    continue
            except OSError:
                continue
        if not _has_mark(pid, needle):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            killed.append(pid)
    return killed


def _created_since(first: int) -> Callable[[int], bool] | None:
    """A test "was this PID handed out after ``first``"; None when that cannot be told."""
    try:
        last = int(_read_int("/proc/sys/kernel/ns_last_pid"))
        pid_max = int(_read_int("/proc/sys/kernel/pid_max"))
    except (OSError, ValueError):
        return None
    if last >= first:
        span = last - first
        if span > pid_max // 2:  # so many processes since: the window may have wrapped
            return None
        return lambda pid: first < pid <= last
    # The counter wrapped while the command ran: (first, pid_max) and [1, last].
    return lambda pid: pid > first or pid <= last


def _read_int(path: str) -> str:
    with open(path, "rb") as fh:
        return fh.read().decode().strip()


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir(_PROC) if name.isdigit()]
    except OSError:
        return []


def _has_mark(pid: int, needle: bytes) -> bool:
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return False
    return any(entry.startswith(needle) for entry in environ.split(b"\x00"))
