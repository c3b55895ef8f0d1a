"""The sandboxed command line: what bwrap is told, and that no secret is ever an argument.

A process's arguments are world-readable in ``/proc/<pid>/cmdline``; the step's database
password and request variables reach the command through its environment only.
"""

from __future__ import annotations

import itertools
import os
import time

import pytest
from pydantic import SecretStr

from airflow_hoop.gateway.execution.runners.bwrap import INNER_DB_DIR, bwrap_argv, bwrap_path
from airflow_hoop.gateway.execution.runners.shell import ShellInvocation, ShellRunner
from airflow_hoop.gateway.settings import PostgresConnection, ShellConnection
from airflow_hoop.gateway.vault import StepCredential
from airflow_hoop.wire.env import EnvEntry

pytestmark = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")

PASSWORD = "pw-" + os.urandom(8).hex()
REQUEST_SECRET = "req-" + os.urandom(8).hex()


def _runner(**settings: object) -> ShellRunner:
    connection = ShellConnection.model_validate(
        {"name": "sh", "database": "wh", "env": {"FROM_CONN": "conn-value"}, **settings}
    )
    database = PostgresConnection(name="wh", database="warehouse", vault_role="r", port=6543)
    credential = StepCredential(
        connection="sh",
        vault_role="r",
        lease_id="lease",
        username="af_user",
        password=SecretStr(PASSWORD),
        ttl=60,
        child_token=SecretStr("token-" + os.urandom(8).hex()),
        issued_at=time.time(),
        expires_at=time.time() + 60,
    )
    return ShellRunner(connection, max_output=1024, credential=credential, database=database)


def test_no_secret_is_an_argument_and_the_environment_carries_them(tmp_path) -> None:
    runner = _runner()
    inv = ShellInvocation(
        script="psql", env=[EnvEntry(name="TOKEN", value=REQUEST_SECRET, kind="env")]
    )
    workdir = str(tmp_path)
    argv = [
        *runner._sandbox.launcher(None, workdir, ("/tmp/hoop-db-x/.s.PGSQL.6543", 6543)),
        *runner.argv(inv),
    ]
    joined = "\0".join(argv)
    assert PASSWORD not in joined and REQUEST_SECRET not in joined
    assert "--setenv" not in argv and "PGPASSWORD" not in joined
    env = runner.environment(inv, workdir)
    assert env["PGPASSWORD"] == PASSWORD and env["TOKEN"] == REQUEST_SECRET
    # No network: the database through the relay's socket, bound where PGHOST points.
    assert env["PGHOST"] == INNER_DB_DIR and env["PGPORT"] == "6543"
    at = argv.index("/tmp/hoop-db-x/.s.PGSQL.6543")
    assert argv[at - 1] == "--bind" and argv[at + 1] == f"{INNER_DB_DIR}/.s.PGSQL.6543"


def test_the_sandbox_options() -> None:
    argv = bwrap_argv("/usr/bin/bwrap", network="none", workdir="/w/d", cwd="/srv/c")
    assert argv[:6] == [
        "/usr/bin/bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    assert "--share-net" not in argv and argv[-3:] == ["--chdir", "/srv/c", "--"]
    pairs = list(zip(argv, argv[1:], argv[2:], strict=False))
    assert ("--bind", "/w/d", "/w/d") in pairs and ("--bind", "/srv/c", "/srv/c") in pairs
    assert ("--tmpfs", "/tmp") in itertools.pairwise(argv)
    # /etc by allow-list: never the password hashes, sudoers, ssh keys or other settings.
    etc = {a for a in argv if a.startswith("/etc")}
    assert "/etc/passwd" in etc
    assert not etc & {"/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh", "/etc"}
    # The working directory is written before it is bound over the private /tmp.
    assert argv.index("--tmpfs") < argv.index("/w/d")
    host = bwrap_argv("/usr/bin/bwrap", network="host", workdir="/w/d", read_only=["/opt/t"])
    assert "--share-net" in host and ("--ro-bind", "/opt/t", "/opt/t") in zip(
        host, host[1:], host[2:], strict=False
    )


def test_the_network_host_and_no_sandbox_keep_the_databases_own_address() -> None:
    for settings in ({"network": "host"}, {"sandbox": "none"}):
        runner = _runner(**settings)
        env = runner.environment(ShellInvocation(script=""), "/w")
        assert env["PGHOST"] == "127.0.0.1" and env["PGPORT"] == "6543"
    plain = _runner(sandbox="none")._sandbox.launcher(None, "/w")
    assert not any("bwrap" in a for a in plain)


def test_the_report_names_a_command_run_without_the_sandbox(tmp_path) -> None:
    from airflow_hoop.ledger.report import ReportBuilder, ReportScope
    from airflow_hoop.ledger.verification import Verification

    step = {"dag_id": "d", "task_id": "t", "run_id": "r", "try_number": 1, "map_index": -1}
    builder = ReportBuilder(tmp_path, ReportScope())
    for seq, (sandbox, db_user) in enumerate(
        [("none", None), ("none", "af_u"), ("bubblewrap", None), (None, None)]
    ):
        shell: dict[str, object] = {} if sandbox is None else {"sandbox": sandbox}
        intent = {"kind": "session.intent", "session_id": f"s{seq}", "connection": "sh"}
        intent |= {"script": "true", "shell": shell, "db_user": db_user}
        builder.add({"seq": 2 * seq, "time": "2026-01-01T00:00:00Z", "step": step, "body": intent})
        result = {"kind": "session.result", "session_id": f"s{seq}", "status": "success"}
        builder.add(
            {"seq": 2 * seq + 1, "time": "2026-01-01T00:00:01Z", "step": step, "body": result}
        )
    builder.finish(Verification(ok=True), {})
    text = (tmp_path / "report.csv").read_text()
    assert text.count("(shell, no sandbox)") == 2 and "af_u (shell, no sandbox)" in text
    assert text.count(",(shell),") == 2
