"""Helpers of the shell tests: is a process of a command still there?"""

from __future__ import annotations

import os
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def command_pids(workdir: str) -> set[int]:
    """Host PIDs of a shell command's processes, found by its working directory.

    In the sandbox a command's ``$$`` is a PID of its own namespace, not of the host. Its
    processes (and bwrap, started there) have the command's fresh working directory as their
    cwd: those, and every process of their PID namespaces other than this host's.
    """
    own_ns = os.readlink("/proc/self/ns/pid")
    found: set[int] = set()
    namespaces: set[str] = set()
    for pid in _pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            if cwd == workdir or cwd.startswith(f"{workdir} ") or cwd.startswith(f"{workdir}/"):
                found.add(pid)
                namespaces.add(os.readlink(f"/proc/{pid}/ns/pid"))
        except OSError:
            continue
    namespaces.discard(own_ns)
    for pid in _pids():
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") in namespaces:
                found.add(pid)
        except OSError:
            continue
    return {pid for pid in found if alive(pid)}


def wait_no_command(workdir: str, timeout: float) -> bool:
    """True once no process of the command in ``workdir`` is left (see ``command_pids``)."""
    deadline = time.monotonic() + timeout
    while command_pids(workdir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]
