"""CPU seconds per part of the machine (Airflow, gateway, OpenBao, PostgreSQL) over a window.

On a machine whose cores are the bottleneck, a run is as slow as the CPU everything on it
spends; this says who spent it. A part is a set of process trees (a root PID and its
descendants) or a process name. A live process's ``utime + stime + cutime + cstime`` covers
itself and every descendant it has reaped, so the sum over a part's live processes, taken at
the start and at the end of a window, differs by exactly the CPU the part used in between,
including task processes and database backends that came and went. (A process reparented to
PID 1 and reaped there is lost; PostgreSQL's postmaster, daemonised by ``pg_ctl``, is found by
name, and it reaps its own backends.)
"""

from __future__ import annotations

from collections.abc import Mapping

import psutil
from pydantic import BaseModel

#: Parts found by process name rather than by a root PID.
BY_NAME = {"postgres": "PostgreSQL", "bao": "OpenBao"}


class CpuSnapshot(BaseModel):
    """CPU seconds per part (live processes plus what they reaped) and the machine's total."""

    parts: dict[str, float]
    machine_busy_s: float

    def since(self, start: CpuSnapshot) -> CpuSnapshot:
        parts = {p: self.parts.get(p, 0.0) - start.parts.get(p, 0.0) for p in self.parts}
        busy = self.machine_busy_s - start.machine_busy_s
        parts["other"] = busy - sum(parts.values())
        return CpuSnapshot(parts=parts, machine_busy_s=busy)


def _total(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


def snapshot(roots: Mapping[str, int], below: Mapping[str, int] | None = None) -> CpuSnapshot:
    """Now: ``roots`` maps a part's name to its root PID (its descendants count with it);
    ``below`` names the descendants of one of those roots as a part of their own (the
    scheduler's executor workers and task processes apart from the scheduler itself)."""
    below = dict(below or {})
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    procs: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["ppid", "name"]):
        parents[proc.pid] = proc.info["ppid"] or 0
        names[proc.pid] = proc.info["name"] or ""
        procs[proc.pid] = proc
    owner_of = {pid: part for part, pid in roots.items()}
    split = {pid: part for part, pid in below.items()}

    def part_of(pid: int) -> str | None:
        seen, first = 0, pid
        while pid and seen < 64:  # a chain of parents, guarded against loops
            if pid in split and pid != first:
                return split[pid]
            if pid in owner_of:
                return owner_of[pid]
            pid, seen = parents.get(pid, 0), seen + 1
        return None

    parts = {part: 0.0 for part in [*roots, *below, *BY_NAME.values()]}
    for pid, proc in procs.items():
        part = BY_NAME.get(names[pid]) or part_of(pid)
        if part is None:
            continue
        try:
            if pid in split:  # the root itself here, what it reaped with its descendants
                t = proc.cpu_times()
                parts[part] += t.user + t.system
                parts[split[pid]] += t.children_user + t.children_system
            else:
                parts[part] += _total(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return CpuSnapshot(parts=parts, machine_busy_s=_machine_busy())
