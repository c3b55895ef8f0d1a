"""Where and as whom a shell command runs: limits, user switch, sandbox, working directory.

The child runs util-linux's ``prlimit`` (limits; ``RLIMIT_CORE`` always 0), ``setpriv``
(``run_as_user``, with supplementary groups cleared) and ``bwrap`` (the sandbox,
``bwrap.py``), each of which execs the next, then the command; see ``shell.py`` for why not a
Python ``preexec_fn``. ``bwrap`` runs as the command's user, so its namespaces are that user's
(unprivileged user namespaces) and the processes keep that user on the host. Every command gets
a fresh working directory, owned by the user it runs as and removed afterwards.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import resource
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_hoop.gateway.execution.runners.bwrap import bwrap_argv, bwrap_path, probe
from airflow_hoop.gateway.execution.runners.postgres import TargetUnavailableError
from airflow_hoop.gateway.settings import ShellConnection, ShellLimits

#: setting -> (name in the ledger, resource, prlimit option)
_RLIMITS: dict[str, tuple[str, int, str]] = {
    "address_space_bytes": ("RLIMIT_AS", resource.RLIMIT_AS, "as"),
    "cpu_seconds": ("RLIMIT_CPU", resource.RLIMIT_CPU, "cpu"),
    "open_files": ("RLIMIT_NOFILE", resource.RLIMIT_NOFILE, "nofile"),
    "file_size_bytes": ("RLIMIT_FSIZE", resource.RLIMIT_FSIZE, "fsize"),
    "processes": ("RLIMIT_NPROC", resource.RLIMIT_NPROC, "nproc"),
}
#: Where the helpers are looked for (never the gateway's own PATH).
_SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


class Sandbox:
    """A shell connection's limits, user and helpers, checked once (a missing one is a 503)."""

    def __init__(self, connection: ShellConnection) -> None:
        self.connection = connection
        self.user = _run_as(connection)
        #: (ledger name, prlimit option, value) of each limit applied.
        self.rlimits = _effective_limits(connection.limits)
        self._helpers = {name: _helper(connection, name) for name in ("prlimit", "setpriv", "env")}
        #: The bwrap executable; None for ``sandbox: none``.
        self.bwrap = _sandbox_available(connection, self._switch_user())

    @property
    def sandboxed(self) -> bool:
        return self.bwrap is not None

    def launcher(
        self, cwd: str | None, workdir: str, db_socket: tuple[str, int] | None = None
    ) -> list[str]:
        """The helpers that limit, switch user, sandbox and enter cwd, each exec'ing the next.

        ``db_socket``: the database relay's socket on the host and the database's port.
        """
        limits = [f"--{option}={value}" for _name, option, value in self.rlimits]
        argv = [self._helpers["prlimit"], "--core=0", *limits, "--", *self._switch_user()]
        if self.bwrap is not None:
            conn = self.connection
            argv += bwrap_argv(
                self.bwrap,
                network=conn.network,
                read_only=conn.read_only_paths,
                workdir=workdir,
                cwd=cwd,
                db_socket=db_socket,
            )
        elif self.user is not None and cwd is not None:
            argv += [self._helpers["env"], f"--chdir={cwd}", "--"]
        return argv

    def _switch_user(self) -> list[str]:
        if self.user is None:
            return []
        uid, gid = self.user.pw_uid, self.gid()
        return [
            self._helpers["setpriv"],
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--",
        ]

    def make_workdir(self) -> str:
        root = self.connection.workdir_root or tempfile.gettempdir()
        workdir = tempfile.mkdtemp(prefix=f"hoop-{self.connection.name}-", dir=root)
        if self.user is not None:
            os.chown(workdir, self.user.pw_uid, self.gid())
        return workdir

    def uid(self) -> int:
        """The user the command's processes run as."""
        return self.user.pw_uid if self.user is not None else os.geteuid()

    def gid(self) -> int:
        assert self.user is not None
        group = self.connection.run_as_group
        if group is None:
            return self.user.pw_gid
        return grp.getgrnam(group).gr_gid


def shell_unavailable(connection: ShellConnection) -> str | None:
    """Why this host cannot start the connection's commands (user switch, helpers, sandbox).

    Runs the sandbox's probe (``bwrap --unshare-all ... true`` as the command's user) once per
    process: the gateway's start and ``check-config`` both report it.
    """
    try:
        Sandbox(connection)
    except TargetUnavailableError as exc:
        return str(exc)
    return None


def _sandbox_available(connection: ShellConnection, switch_user: list[str]) -> str | None:
    """bwrap's path when the connection is sandboxed; refuses when no sandbox can be made."""
    if connection.sandbox == "none":
        return None
    bwrap = bwrap_path()
    why = probe(tuple(switch_user), connection.network, tuple(connection.read_only_paths))
    if bwrap is None or why is not None:
        who = f" as {connection.run_as_user}" if connection.run_as_user else ""
        raise TargetUnavailableError(
            f"connection {connection.name!r}: the gateway cannot sandbox commands{who}: {why}",
            "install bubblewrap and allow unprivileged user namespaces (sysctl "
            "kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0), or run the "
            "gateway as root; or set sandbox: none on the connection (docs/shell.md)",
        )
    return bwrap


def _effective_limits(limits: ShellLimits) -> list[tuple[str, str, int]]:
    """(ledger name, prlimit option, value) to apply; never above the gateway's hard limit."""
    chosen = []
    for field, (name, res, option) in _RLIMITS.items():
        value = getattr(limits, field)
        if value is None:
            continue
        _soft, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        chosen.append((name, option, value))
    return chosen


def _helper(connection: ShellConnection, name: str) -> str:
    path = shutil.which(name, path=_SYSTEM_PATH)
    if path is None:
        raise TargetUnavailableError(
            f"connection {connection.name!r}: {name} is not installed on the gateway host",
            "install util-linux and coreutils (they provide prlimit, setpriv and env)",
        )
    return path


def _run_as(connection: ShellConnection) -> pwd.struct_passwd | None:
    if connection.run_as_user is None:
        return None
    try:
        user = pwd.getpwnam(connection.run_as_user)
    except KeyError:
        raise TargetUnavailableError(
            f"connection {connection.name!r}: run_as_user {connection.run_as_user!r} "
            "does not exist on the gateway host",
            "create the user or correct run_as_user in the gateway settings",
        ) from None
    if os.geteuid() not in (0, user.pw_uid):
        raise TargetUnavailableError(
            f"connection {connection.name!r}: the gateway runs as uid {os.geteuid()} and "
            f"cannot switch to {user.pw_name}",
            "run the gateway as root (it drops to run_as_user for each command) "
            "or remove run_as_user",
        )
    return user


def remove_tree(path: str) -> bool:
    """Remove the working directory, also what the command made unwritable; True when gone."""

    def fix_and_retry(func: Callable[..., Any], target: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            parent = os.path.dirname(target)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, stat.S_IRWXU)
            func(target)

    shutil.rmtree(path, onerror=fix_and_retry)
    return not Path(path).exists()
