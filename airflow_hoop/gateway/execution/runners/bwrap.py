"""The bubblewrap sandbox of a shell command: its ``bwrap`` arguments, and whether it works here.

The command gets its own PID, mount, IPC, UTS, cgroup, user and network namespaces
(``--unshare-all``; ``--share-net`` only for ``network: host``), no capabilities, a new session
(no ``TIOCSTI`` into a terminal), and dies with the gateway's process (``--die-with-parent``).
Its root is an empty tmpfs holding only:

- the system directories read-only (``/usr`` and, as on the host, ``/bin``, ``/lib*``,
  ``/sbin`` as links or binds) and an allow-list of ``/etc`` (``_ETC`` below; name
  resolution only with the host's network); nothing else of ``/etc`` (``shadow``, ``ssh``,
  sudoers, the gateway's settings wherever they live);
- the connection's ``read_only_paths``, read-only;
- its own ``/proc`` (only its own processes), a minimal ``/dev``, a private ``/tmp``;
- its fresh working directory and a requested ``cwd``, read-write, at their host paths (the
  environment names them: ``HOME``, ``TMPDIR``, ``filesystem:`` variables);
- with ``database`` and no network, the gateway's relay socket of that database
  (``db_relay.py``) as ``/run/hoop-db/.s.PGSQL.<port>``.

Nothing secret is ever an argument: the environment reaches the command through ``bwrap``'s own
environment (it passes it on), never ``--setenv``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

#: Where a sandboxed command finds the database relay's socket (PGHOST).
INNER_DB_DIR = "/run/hoop-db"
#: Looked for in the system directories only, never on the gateway's own PATH.
_SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: What of /etc a command needs: users and groups (``id``, ``psql``'s default user), the
#: dynamic linker's cache, the time zone, Debian's alternatives (``awk``...). Each is a mount
#: (~0.25 ms a command), so no more than that.
_ETC = ("passwd", "group", "ld.so.cache", "localtime", "alternatives")
#: With the host's network: name resolution, service names, TLS roots.
_ETC_NETWORK = (
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "gai.conf",
    "host.conf",
    "services",
    "protocols",
    "ssl",
)


def bwrap_path() -> str | None:
    """The ``bwrap`` executable, or None when bubblewrap is not installed."""
    return shutil.which("bwrap", path=_SYSTEM_PATH)


def bwrap_argv(
    bwrap: str,
    *,
    network: str,
    read_only: Sequence[str] = (),
    workdir: str | None,
    cwd: str | None = None,
    db_socket: tuple[str, int] | None = None,
) -> list[str]:
    """``bwrap`` and its options, up to and including ``--``: the command follows.

    ``db_socket`` is (the relay's socket on the host, the database's port). ``workdir`` None
    is the start-up probe's sandbox (nothing writable).
    """
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if network == "host":
        argv.append("--share-net")
    argv += [*_system_mounts(network), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 (the sandbox's own)
    for path in read_only:
        argv += ["--ro-bind", path, path]
    if workdir is not None:
        argv += ["--bind", workdir, workdir]
    if cwd is not None and cwd != workdir:
        argv += ["--bind", cwd, cwd]
    if db_socket is not None:
        host_socket, port = db_socket
        argv += ["--bind", host_socket, f"{INNER_DB_DIR}/.s.PGSQL.{port}"]
    argv += ["--chdir", cwd or workdir or "/", "--"]
    return argv


@functools.cache
def _system_mounts(network: str) -> tuple[str, ...]:
    """The read-only system part of the sandbox, as the host lays it out (read once)."""
    argv: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for name in _ETC + (_ETC_NETWORK if network == "host" else ()):
        path = f"/etc/{name}"
        if os.path.lexists(path):
            argv += ["--ro-bind", path, path]
    return tuple(argv)


@functools.cache
def probe(launcher: tuple[str, ...], network: str, read_only: tuple[str, ...]) -> str | None:
    """None when a sandbox can be made here with ``launcher`` (the user switch); else why not.

    Run once per process and user: ``bwrap --unshare-all ... true``. Creating the namespaces
    needs unprivileged user namespaces (``kernel.unprivileged_userns_clone``,
    ``user.max_user_namespaces``, AppArmor's ``restrict_unprivileged_userns``) or root.
    """
    bwrap = bwrap_path()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    true = shutil.which("true", path=_SYSTEM_PATH) or "/bin/true"
    argv = [*launcher, *bwrap_argv(bwrap, network=network, read_only=read_only, workdir=None), true]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            env={"PATH": _SYSTEM_PATH},
            cwd=tempfile.gettempdir(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap did not run: {exc}"
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
        return f"bwrap --unshare-all failed ({said or f'exit {done.returncode}'})"
    return None
