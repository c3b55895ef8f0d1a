"""Run a shell command on the gateway host: hoop's ``custom`` connection.

``command + client_args`` runs with the script on stdin, stdout and stderr merged, in a fresh
working directory that is removed afterwards. Its environment is built only from the
connection's settings, the step's credential and the request: nothing of the gateway's own
environment (its Vault token, ``HOOP_GATEWAY_*``) is passed on. The process leads a process
group of its own; on timeout, kill or step end the whole group gets SIGTERM, then SIGKILL after
the connection's grace period, and whatever of the group outlives the command is killed too.
Processes that left the group (``setsid``) are found by the run's mark in their environment and
killed as well (``strays.py``).

Resource limits (``sandbox.py``) are applied with ``setrlimit(2)`` in the child before the
command runs: RLIMIT_AS, RLIMIT_CPU, RLIMIT_NOFILE, RLIMIT_FSIZE, RLIMIT_NPROC as the
connection sets them, RLIMIT_CORE always 0. The child runs util-linux's ``prlimit`` (limits) and ``setpriv``
(``run_as_user``, with supplementary groups cleared), each of which execs the next, rather than
a Python ``preexec_fn``: ``preexec_fn`` (and Popen's ``user=``) force ``fork()`` where Python
otherwise uses ``vfork()``, which cost 10 ms more per command in an 80 MB gateway process
(measured), and is not safe in a threaded process.

The command itself runs in a bubblewrap sandbox (``bwrap.py``) unless the connection says
``sandbox: none``. There its processes live in a PID namespace whose init is bwrap's: when the
gateway kills the group (bwrap, the group's leader on the host), bwrap's init dies with it
(``--die-with-parent``) and the kernel kills every process of the namespace, ``setsid`` ones
included. SIGTERM, which bwrap does not pass on, is sent to the command's processes by their
mark, so a command still gets its grace period. bwrap reports a command killed by signal N
as exit 128+N, as a shell does; the gateway reads such a status as that signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time

from pydantic import BaseModel

from airflow_hoop.gateway.execution.runners.bwrap import INNER_DB_DIR
from airflow_hoop.gateway.execution.runners.db_relay import DatabaseRelay
from airflow_hoop.gateway.execution.runners.outcome import RunOutcome
from airflow_hoop.gateway.execution.runners.output import OutputCapture
from airflow_hoop.gateway.execution.runners.sandbox import Sandbox, remove_tree
from airflow_hoop.gateway.execution.runners.strays import MARK_VARIABLE, kill_marked, new_mark
from airflow_hoop.gateway.settings import PostgresConnection, ShellConnection
from airflow_hoop.gateway.vault import StepCredential
from airflow_hoop.ledger.records import ShellExit, ShellIntent
from airflow_hoop.wire.env import EnvEntry
from airflow_hoop.wire.sessions import ShellRunInfo

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: hoop's exit code when none could be obtained (timeouts, kills, a command that never started).
NO_EXIT_CODE = -2
#: Bigger reads, fewer per-chunk costs (decode, mask, hash) when the command writes fast.
_READ_SIZE = 1_048_576
#: How long to wait for the output pipe to close once the process group is gone.
_DRAIN_SECONDS = 2.0


class ShellInvocation(BaseModel):
    """A validated shell exec (see ``execution/shell_exec.py``): what the runner starts."""

    script: str
    client_args: list[str] = []
    env: list[EnvEntry] = []
    cwd: str | None = None
    output_encoding: str = "utf-8"


class ShellOutcome(RunOutcome):
    """A shell command's end: RunOutcome plus what the ledger and the operator need."""

    signal: int | None = None
    timed_out: bool = False
    cancelled: bool = False
    output_bytes: int = 0
    raw_output_sha256: str = ""
    masked: int = 0
    workdir_removed: bool = True
    last_line: str = ""

    def ledger_detail(self) -> ShellExit:
        return ShellExit(
            signal=self.signal,
            timed_out=self.timed_out,
            output_bytes=self.output_bytes,
            raw_output_sha256=self.raw_output_sha256,
            masked=self.masked,
            workdir_removed=self.workdir_removed,
        )

    def run_info(self) -> ShellRunInfo:
        return ShellRunInfo(
            last_line=self.last_line,
            output_bytes=self.output_bytes,
            signal=self.signal,
            timed_out=self.timed_out,
            masked=self.masked,
        )


class ShellRunner:
    """Runs one step's commands on one custom connection, one at a time."""

    def __init__(
        self,
        connection: ShellConnection,
        *,
        max_output: int,
        credential: StepCredential | None = None,
        database: PostgresConnection | None = None,
        application_name: str | None = None,
    ) -> None:
        self.connection = connection
        #: PGAPPNAME beside the step's database user: the step in the database's logs
        #: (docs/correlation.md). A default the command may override, not a guarantee.
        self._application_name = application_name
        self.max_output = connection.max_output_bytes or max_output
        self._credential = credential
        self._database = database
        self._sandbox = Sandbox(connection)
        #: With a sandbox and no network, the database is reached through the gateway's relay.
        self._relay: DatabaseRelay | None = None
        if (
            credential is not None
            and database is not None
            and self._sandbox.sandboxed
            and connection.network == "none"
        ):
            uid = self._sandbox.uid()
            gid = self._sandbox.gid() if self._sandbox.user is not None else os.getegid()
            self._relay = DatabaseRelay(database.host, database.port, uid, gid)
        self._proc: asyncio.subprocess.Process | None = None
        self._mark = ""
        self._cancelled = False
        self._stopper: asyncio.Task[None] | None = None

    broken = False  # nothing to reconnect: every command is a new process
    in_transaction = False  # no transaction spans shell commands

    # -- what a command will get ----------------------------------------------------------
    def argv(self, inv: ShellInvocation) -> list[str]:
        return [*self.connection.command, *inv.client_args]

    def environment(self, inv: ShellInvocation, workdir: str) -> dict[str, str]:
        """The command's whole environment. Request variables never override the connection's."""
        env, fixed = self._base_env(workdir)
        for entry in inv.env:
            if entry.name in fixed:
                continue  # hoop drops request variables the connection defines
            env[entry.name] = entry.value if entry.kind == "env" else _env_file(workdir, entry)
        return env

    def _base_env(self, workdir: str) -> tuple[dict[str, str], set[str]]:
        """(environment before the request's variables, names the request may not set)."""
        env = {"PATH": DEFAULT_PATH, "HOME": workdir, "TMPDIR": workdir}
        env.update(self.connection.env)
        credential = self._credential_env()
        env.update(credential)
        return env, set(self.connection.env) | set(credential)

    def secrets(self) -> list[str]:
        """Values masked out of the recorded output."""
        if self._credential is None:
            return []
        return [self._credential.password.get_secret_value()]

    def intent(self, inv: ShellInvocation) -> ShellIntent:
        return ShellIntent(
            argv=self.argv(inv),
            env_names=sorted(set(self._base_env("")[0]) | {e.name for e in inv.env}),
            cwd=inv.cwd,
            run_as=self._sandbox.user.pw_name if self._sandbox.user else None,
            timeout_seconds=self.connection.timeout_seconds,
            max_output_bytes=self.max_output,
            limits={name: value for name, _option, value in self._sandbox.rlimits},
            sandbox="bubblewrap" if self._sandbox.sandboxed else "none",
            network=self.connection.network if self._sandbox.sandboxed else None,
        )

    def capture(self, inv: ShellInvocation) -> OutputCapture:
        return OutputCapture(
            encoding=inv.output_encoding, max_bytes=self.max_output, secrets=self.secrets()
        )

    def _credential_env(self) -> dict[str, str]:
        cred, db = self._credential, self._database
        if cred is None or db is None:
            return {}
        return {
            # Through the relay's socket when the sandbox has no network (db_relay.py).
            "PGHOST": INNER_DB_DIR if self._relay is not None else db.host,
            "PGPORT": str(db.port),
            "PGDATABASE": db.database,
            "PGSSLMODE": db.sslmode,
            "PGUSER": cred.username,
            "PGPASSWORD": cred.password.get_secret_value(),
            **({"PGAPPNAME": self._application_name} if self._application_name else {}),
        }

    # -- running ----------------------------------------------------------------------------
    async def execute(self, inv: ShellInvocation, capture: OutputCapture) -> ShellOutcome:
        """Run the command to its end (or timeout/cancel); never raises for the command's faults."""
        self._cancelled = False
        started = time.perf_counter()
        workdir = self._sandbox.make_workdir()
        mark = self._mark = new_mark()
        try:
            proc = await self._spawn(inv, workdir, mark)
        except (OSError, ValueError, KeyError) as exc:
            removed = remove_tree(workdir)
            capture.finish()
            who = f" as {self._sandbox.user.pw_name}" if self._sandbox.user else ""
            why = f"cannot start {self.connection.command[0]}{who} in {inv.cwd or workdir}: {_reason(exc)}"
            capture.note(f"[gateway] {why}\n")
            return self._outcome(capture, started, NO_EXIT_CODE, error=why, removed=removed)
        self._proc = proc
        feeder = asyncio.create_task(_feed(proc, inv.script.encode("utf-8")))
        assert proc.stdout is not None
        reader = asyncio.create_task(_read(proc.stdout, capture))
        timed_out = False
        try:
            try:
                await asyncio.wait_for(_exited(proc), self.connection.timeout_seconds)
            except asyncio.TimeoutError:
                timed_out = not self._cancelled
                await self._stop_group(proc)
            # The command is over: nothing it started may outlive it (a background job
            # would also hold the output pipe open).
            _killpg(proc.pid, signal.SIGKILL)
            # ...nor what left the group with setsid (before draining: it may hold the pipe).
            # In the sandbox the PID namespace died with bwrap: nothing of it is left.
            if not self._sandbox.sandboxed:
                await asyncio.to_thread(kill_marked, mark, self._sandbox.uid(), proc.pid)
            await _drain(reader)
        finally:
            feeder.cancel()
            self._proc = None
            if self._stopper is not None:
                await asyncio.gather(self._stopper, return_exceptions=True)
                self._stopper = None
            removed = remove_tree(workdir)
        code = await _returncode(proc)
        sig = -code if code < 0 else None
        error = None
        if timed_out:
            error = f"timed out after {self.connection.timeout_seconds:g}s"
            capture.finish()
            capture.note(f"[gateway] {error}: the process group was stopped\n")
        else:
            capture.finish()
        if sig is None and self._sandbox.sandboxed and 128 < code < 128 + signal.NSIG:
            sig = code - 128  # bwrap's report of a signal (see the module's docstring)
        if timed_out or self._cancelled:
            exit_code = NO_EXIT_CODE
        elif sig is not None:
            exit_code = 128 + sig  # as a shell reports a child killed by a signal
            error = f"killed by signal {signal.Signals(sig).name}"
        else:
            exit_code = code
        return self._outcome(
            capture, started, exit_code, error=error, removed=removed, sig=sig, timed_out=timed_out
        )

    async def cancel(self) -> None:
        """Stop the running command's process group (safe from another task)."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._cancelled = True
        if self._stopper is None:
            self._stopper = asyncio.create_task(self._stop_group(proc))

    async def close(self) -> None:
        await self.cancel()
        if self._relay is not None:
            await self._relay.close()

    async def _stop_group(self, proc: asyncio.subprocess.Process) -> None:
        if self._sandbox.sandboxed:
            # bwrap dies of SIGTERM without passing it on: the command's own processes get it.
            await asyncio.to_thread(
                kill_marked, self._mark, self._sandbox.uid(), proc.pid, signal.SIGTERM
            )
        else:
            _killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_exited(proc), self.connection.kill_grace_seconds)
        _killpg(proc.pid, signal.SIGKILL)

    async def _spawn(
        self, inv: ShellInvocation, workdir: str, mark: str
    ) -> asyncio.subprocess.Process:
        cwd = inv.cwd or workdir
        env = self.environment(inv, workdir)
        env[MARK_VARIABLE] = mark  # last: a request variable cannot replace it
        db_socket = None
        if self._relay is not None:
            db_socket = (await self._relay.socket(), self._relay.port)
        return await asyncio.create_subprocess_exec(
            *self._sandbox.launcher(inv.cwd, workdir, db_socket),
            *self.argv(inv),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # A requested cwd is entered after the user switch (by env --chdir), so the
            # command never gets a directory its user could not enter itself.
            cwd=workdir if self._sandbox.user is not None or self._sandbox.sandboxed else cwd,
            env=env,
            start_new_session=True,  # its own process group: killed as a whole
            close_fds=True,
            limit=_READ_SIZE,  # lets the pipe transport buffer that much before pausing
        )

    def _outcome(
        self,
        capture: OutputCapture,
        started: float,
        exit_code: int,
        *,
        error: str | None,
        removed: bool,
        sig: int | None = None,
        timed_out: bool = False,
    ) -> ShellOutcome:
        return ShellOutcome(
            status="success" if exit_code == 0 else "failed",
            exit_code=exit_code,
            error=error,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            truncated=capture.truncated,
            output=capture.text(),
            signal=sig,
            timed_out=timed_out,
            cancelled=self._cancelled,
            output_bytes=capture.output_bytes,
            raw_output_sha256=capture.raw_sha256,
            masked=capture.masked,
            workdir_removed=removed,
            last_line=capture.last_line(),
        )


# -- helpers ---------------------------------------------------------------------------------
def _env_file(workdir: str, entry: EnvEntry) -> str:
    """hoop's ``filesystem:`` variable: the value in a private file, the variable its path."""
    fd, path = tempfile.mkstemp(prefix=f"{entry.name}-", suffix=".envfs", dir=workdir)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(entry.value)
    with contextlib.suppress(OSError):
        st = os.stat(workdir)
        os.chown(path, st.st_uid, st.st_gid)  # readable by the run_as user only
    return path


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    try:
        if data:
            proc.stdin.write(data)
            await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command ended without reading all of its script
    finally:
        with contextlib.suppress(Exception):
            proc.stdin.close()


async def _read(stream: asyncio.StreamReader, capture: OutputCapture) -> None:
    while chunk := await stream.read(_READ_SIZE):
        capture.feed(chunk)


async def _drain(reader: asyncio.Task[None]) -> None:
    """Wait for the output's end; a process outside the group may hold the pipe: give up then."""
    done, _ = await asyncio.wait({reader}, timeout=_DRAIN_SECONDS)
    if not done:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def _exited(proc: asyncio.subprocess.Process) -> None:
    """Until the command's process has exited.

    Not ``proc.wait()``: asyncio answers that only once the output pipe is closed too, and a
    process the command left behind (``cmd &``, ``setsid -f``) holds it open, so the command
    would "run" until its timeout. A pidfd is readable as soon as the process exits.
    """
    if proc.returncode is not None:
        return
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:  # already reaped by asyncio's child watcher
        await _returncode(proc)
        return
    except (AttributeError, OSError):  # no pidfd (not Linux, or Linux < 5.3)
        await proc.wait()
        return
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _returncode(proc: asyncio.subprocess.Process, wait: float = 2.0) -> int:
    """The exit status once asyncio's child watcher has reaped the process (just after exit)."""
    deadline = time.monotonic() + wait
    while proc.returncode is None and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return proc.returncode if proc.returncode is not None else NO_EXIT_CODE


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
