"""A throwaway PostgreSQL cluster: initdb, start on 127.0.0.1 only, stop by data directory.

The cluster is disposable, so durability is switched off (fsync, synchronous_commit,
full_page_writes) and it is stopped with ``-m immediate``. Postgres refuses to run as root:
when we are root every server command runs as the ``postgres`` account through ``runuser``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from airflow_hoop.errors import ConfigError

DEFAULT_PGBIN = "/usr/lib/postgresql/15/bin"
SUPERUSER = "pgsuper"
OS_USER = "postgres"
#: Name prefix of the cluster directory used when the run dir is unreachable for ``postgres``.
PRIVATE_DIR_PREFIX = "airflow-hoop-pg-"

_INSTALL_FIX = "apt-get install postgresql-15, or point PGBIN at a PostgreSQL 15 bin directory"
_PGAUDIT_FIX = "apt-get install postgresql-15-pgaudit (make system-deps), or start without pgaudit"
#: pgaudit's session logging when the stack turns it on (docs/correlation.md): every read,
#: write and DDL statement as sent, one entry each; parameters stay out of the log (they may
#: be secrets). PostgreSQL's JSON log (``data/log/postgresql.json``) keeps each entry on one
#: line with its session's application_name, user and backend PID, whatever the statement's
#: newlines: a reader parses it with a JSON parser, not a regular expression.
PGAUDIT_SETTINGS = {
    "shared_preload_libraries": "'pgaudit'",
    "pgaudit.log": "'read, write, ddl'",
    "pgaudit.log_parameter": "off",
    "pgaudit.log_relation": "off",
    "logging_collector": "on",
    "log_destination": "'jsonlog'",
    "log_directory": "'log'",
    "log_filename": "'postgresql.log'",
}
# sun_path is 108 bytes on Linux; the socket file is "<dir>/.s.PGSQL.<port>".
_MAX_SOCKET_DIR = 90
_START_TIMEOUT_S = 30


@dataclass(frozen=True)
class PgCluster:
    """Where one throwaway cluster lives. ``base_dir`` holds the data dir, socket and log."""

    bin_dir: Path
    base_dir: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"


def pg_bin_dir() -> Path:
    """The PostgreSQL server binaries (``$PGBIN`` or the Debian PG15 default), checked."""
    bin_dir = Path(os.environ.get("PGBIN") or DEFAULT_PGBIN)
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not os.access(bin_dir / tool, os.X_OK):
            raise ConfigError(f"PostgreSQL server binary {bin_dir / tool} not found", _INSTALL_FIX)
    return bin_dir


def _running_as_root() -> bool:
    return os.geteuid() == 0


def create_run_dir(prefix: str = "airflow-hoop-") -> Path:
    """A fresh run directory, on /dev/shm when writable (initdb is about twice as fast there).

    Mode 0755 because the ``postgres`` account must traverse it to reach its data directory.
    """
    shm = "/dev/shm"  # noqa: S108 - mkdtemp below makes a private directory in it
    parent = shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None
    run_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    run_dir.chmod(0o755)
    return run_dir


def _reachable_by_others(path: Path) -> bool:
    """Whether an unrelated account can traverse every ancestor of ``path``."""
    return all(os.stat(p).st_mode & 0o001 for p in path.resolve().parents)


def _usable_base(run_dir: Path) -> bool:
    candidate = str((run_dir / "pg").resolve())
    # The socket path is spliced into a config value and must fit in sun_path.
    if len(candidate) > _MAX_SOCKET_DIR or any(c in candidate for c in "'\\\n"):
        return False
    return not _running_as_root() or _reachable_by_others(run_dir)


def prepare_cluster(run_dir: Path, port: int, bin_dir: Path | None = None) -> PgCluster:
    """Create the cluster's base directory and return where everything will live.

    The base is ``<run_dir>/pg`` when the ``postgres`` account can reach it and its socket
    path is short enough; otherwise a private directory on /dev/shm (or the temp dir), which
    ``remove_cluster_dir`` deletes again.
    """
    bin_dir = bin_dir or pg_bin_dir()
    if _usable_base(run_dir):
        base = run_dir / "pg"
        base.mkdir(mode=0o755)  # the socket lives here: other local users may connect
    else:
        base = create_run_dir(prefix=PRIVATE_DIR_PREFIX)
    if _running_as_root():
        shutil.chown(base, OS_USER, OS_USER)
    return PgCluster(bin_dir=bin_dir, base_dir=base, port=port)


def _as_owner(cmd: list[str]) -> list[str]:
    """``cmd`` run as the cluster owner: ``postgres`` when we are root, ourselves otherwise."""
    return ["runuser", "-u", OS_USER, "--", *cmd] if _running_as_root() else cmd


def _clean_env() -> dict[str, str]:
    # Stray PGDATA/PGPORT/PGHOST from the caller must not redirect the throwaway cluster.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _run(cmd: list[str], cluster: PgCluster, what: str, timeout: float) -> None:
    proc = subprocess.run(
        _as_owner(cmd),
        cwd=cluster.base_dir,  # the postgres account may not be able to read our cwd
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise ConfigError(
            f"PostgreSQL {what} failed (exit {proc.returncode}): {tail}", _INSTALL_FIX
        )


def initdb(cluster: PgCluster, *, pgaudit: bool = False) -> None:
    """Create the data directory: superuser ``pgsuper``, trust on the socket, SCRAM on TCP.

    ``pgaudit``: load pgaudit and log every statement's audit line to the cluster's log.
    """
    if pgaudit and not (cluster.bin_dir.parent / "lib" / "pgaudit.so").exists():
        raise ConfigError("pgaudit is not installed for this PostgreSQL", _PGAUDIT_FIX)
    _run(
        [
            str(cluster.bin_dir / "initdb"),
            "-D", str(cluster.data_dir),
            "-U", SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E", "UTF8",
            "--locale=C",
            "-N",  # no fsync of the new files: the cluster is thrown away
        ],
        cluster,
        "initdb",
        timeout=120,
    )  # fmt: skip
    # In the config file rather than on the pg_ctl command line: no quoting of paths.
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(cluster.port),
        "unix_socket_directories": f"'{cluster.socket_dir}'",
        "max_connections": "200",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        **(PGAUDIT_SETTINGS if pgaudit else {}),
    }
    with open(cluster.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("\n# airflow-hoop devstack (throwaway, loopback only)\n")
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())


def start(cluster: PgCluster) -> None:
    """Start the server and wait until it accepts connections."""
    _run(
        [
            str(cluster.bin_dir / "pg_ctl"),
            "-D", str(cluster.data_dir),
            "-l", str(cluster.log_file),
            "-w", "-t", str(_START_TIMEOUT_S),
            "start",
        ],
        cluster,
        "start",
        timeout=_START_TIMEOUT_S + 10,
    )  # fmt: skip


def postmaster_pid(data_dir: Path) -> int | None:
    """The PID recorded in ``postmaster.pid``, if the file exists and is readable."""
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        return int(first)
    except (OSError, ValueError):
        return None


def stop(bin_dir: Path, data_dir: Path) -> None:
    """Stop the cluster of ``data_dir`` immediately. A no-op when it is not running.

    The postmaster is daemonised by pg_ctl (reparented to PID 1), so it is found through its
    PID file, never by name.
    """
    pid = postmaster_pid(data_dir)
    if pid is None:
        return
    pg_ctl = bin_dir / "pg_ctl"
    if os.access(pg_ctl, os.X_OK):
        proc = subprocess.run(
            _as_owner([str(pg_ctl), "-D", str(data_dir), "-m", "immediate", "-w", "stop"]),
            cwd="/",
            env=_clean_env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        if proc.returncode == 0 or postmaster_pid(data_dir) is None:
            return
    # pg_ctl is gone or failed: SIGQUIT is what "-m immediate" sends, to the recorded PID only
    # and only if that PID is still a postgres server on this data directory.
    if _is_postmaster_of(pid, data_dir):
        os.kill(pid, signal.SIGQUIT)


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"postgres" in part for part in cmdline[:1]) and str(data_dir).encode() in cmdline


def remove_cluster_dir(base_dir: Path) -> None:
    """Delete the cluster's base directory (data, socket, log). The server must be stopped."""
    shutil.rmtree(base_dir, ignore_errors=True)
