"""Bring the embedded stack up and down: PostgreSQL, OpenBao dev server and the gateway.

Loopback only, throwaway, dev-only secrets. ``up`` never prints: secrets live in the run
directory (files mode 0600) and in the returned ``StackInfo``. Every process is stopped by
the PID recorded in ``stack.json``, which is written as soon as the first process starts, so
``down`` can clean up after an ``up`` that was interrupted half-way.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from airflow_hoop.devstack import (
    database_setup,
    issuer_process,
    openbao,
    ports,
    postgres,
    vault_setup,
)
from airflow_hoop.devstack.models import STACK_FILE, StackInfo, write_private
from airflow_hoop.errors import ConfigError
from airflow_hoop.gateway.settings import ApiKey, GatewaySettings

GATEWAY_CONFIG_FILE = "gateway.yaml"
GATEWAY_LOG_FILE = "gateway.log"
ANCHOR_DIR = "anchor"
GATEWAY_MODULE = "airflow_hoop.gateway"
WAREHOUSE_CONNECTION = "warehouse"
SHELL_CONNECTION = "ops_shell"
#: The warehouse's masking policy: e-mail and card columns, and both kinds in any text.
WAREHOUSE_MASKING: dict[str, Any] = {
    "name": "warehouse-pii",
    "mode": "best-effort",
    "columns": [
        {"name": "email_columns", "columns": ["email", "*_email"], "method": "hash"},
        {"name": "card_columns", "columns": ["card_number", "*_card_number"], "method": "partial"},
    ],
    "detectors": ["email", "payment_card"],
}
#: ops_shell reaches the warehouse: its output is scanned by the warehouse policy's detectors
#: (a sibling connection may not show what another masks, docs/masking.md).
SHELL_MASKING: dict[str, Any] = {
    "name": "ops-shell-pii",
    "mode": "best-effort",
    "detectors": WAREHOUSE_MASKING["detectors"],
}
ALLOWED_DAGS = ["governed_*", "test_*", "bench_*"]
APPROVER_GROUP = "data-owners"
#: Writes of these DAGs need one approval from data-owners (see docs/approvals.md).
APPROVAL_RULES = [
    {
        "name": "sensitive-writes",
        "required_for": "writes",
        "dags": [
            "test_approval*",
            "payroll_*",
            "bench_approval*",
            "governed_approval*",
            "governed_agent",
            "test_agent*",
            "bench_agent*",
        ],
        "groups": [APPROVER_GROUP],
        "min_approvals": 1,
        "expires_after_seconds": 3600,
    }
]
_GATEWAY_HEALTH_TIMEOUT_S = 30.0
# uvicorn's graceful shutdown (the gateway revokes live step credentials) is capped at 20 s.
_GATEWAY_STOP_TIMEOUT_S = 25.0

# Popen objects of the processes this interpreter started, so that they are waited for (no
# "still running" warnings at exit). ``down`` works without them, from PIDs alone.
_children: dict[int, subprocess.Popen[bytes]] = {}


def up(
    run_dir: Path | None = None,
    *,
    gateway: bool = True,
    vault_audit_raw: bool = False,
    pgaudit: bool = False,
) -> StackInfo:
    """Start and configure a fresh stack; return how to reach it (also saved as stack.json).

    ``run_dir`` must be absent or empty; by default a new directory on /dev/shm (or the temp
    dir) is used. With ``gateway=False`` everything but the gateway process comes up.
    ``vault_audit_raw`` makes OpenBao's audit log keep secrets in clear (leak tests only).
    ``pgaudit`` loads pgaudit into PostgreSQL (``StackInfo.pg_json_log``). On any
    failure whatever was started is stopped again and the error is raised.
    """
    pg_bin = postgres.pg_bin_dir()  # fail before starting anything when a binary is missing
    openbao.bao_binary()
    run_dir = _prepare_run_dir(run_dir)
    bao_port = ports.free_port_pair()
    pg_port = ports.free_port(exclude={bao_port, bao_port + 1})
    gw_port = ports.free_port(exclude={bao_port, bao_port + 1, pg_port})
    issuer_port = ports.free_port(exclude={bao_port, bao_port + 1, pg_port, gw_port})
    try:
        cluster = postgres.prepare_cluster(run_dir, pg_port, pg_bin)
    except BaseException:
        postgres.remove_cluster_dir(run_dir)
        raise
    bao_addr = f"http://{ports.LOOPBACK}:{bao_port}"
    info = StackInfo(
        run_dir=str(run_dir),
        pg_bin=str(pg_bin),
        pg_data=str(cluster.data_dir),
        pg_port=pg_port,
        pg_socket_dir=str(cluster.socket_dir),
        bao_addr=bao_addr,
        bao_root_token=secrets.token_urlsafe(24),
        bao_pid=0,
        gateway_url=f"http://{ports.LOOPBACK}:{gw_port}",
        gateway_settings_path=str(run_dir / GATEWAY_CONFIG_FILE),
        gateway_log=str(run_dir / GATEWAY_LOG_FILE),
        workload_key_path=str(run_dir / vault_setup.WORKLOAD_KEY_FILE),
        auditor_api_key="hpk_" + secrets.token_urlsafe(32),
        approver_api_key="hpk_" + secrets.token_urlsafe(32),
        reviewer_api_key="hpk_" + secrets.token_urlsafe(32),
        bao_audit_log=str(run_dir / openbao.AUDIT_LOG_FILE),
        anchor_dir=str(run_dir / ANCHOR_DIR),
    )
    try:
        # bao first and without waiting: it becomes healthy while initdb runs (~1 s in all).
        bao = openbao.launch(run_dir, bao_port, info.bao_root_token, audit_raw=vault_audit_raw)
        info.bao_pid = bao.pid
        _children[bao.pid] = bao
        _save(info)
        # The issuer serves its JWKS before OpenBao's JWT auth is pointed at it.
        issuer_process.prepare(info, issuer_port)
        issuer = issuer_process.start(info)
        _children[issuer.pid] = issuer
        _save(info)
        postgres.initdb(cluster, pgaudit=pgaudit)
        postgres.start(cluster)
        passwords = database_setup.create_roles_and_databases(
            cluster.socket_dir, pg_port, warehouse_db=info.warehouse_db, gateway_db=info.gateway_db
        )
        openbao.wait_healthy(bao, bao_port, run_dir / "bao.log")
        root = vault_setup.vault_client(bao_addr, info.bao_root_token)
        try:
            setup = vault_setup.configure(
                root,
                run_dir=run_dir,
                bao_addr=bao_addr,
                pg_port=pg_port,
                bao_admin_password=passwords.bao_admin,
                issuer_jwks_url=issuer_process.jwks_url(info),
                issuer=info.issuer_iss,
                warehouse_db=info.warehouse_db,
            )
        finally:
            root.adapter.close()
        write_gateway_settings(info, gw_port, setup, passwords.gateway)
        if gateway:
            info.gateway_pid = _start_gateway(info)
            _save(info)
            _wait_gateway_healthy(info)
    except BaseException:
        down(info)
        raise
    return info


def down(info_or_run_dir: StackInfo | Path | str) -> None:
    """Stop every process of the stack by PID and remove its run directory. Idempotent."""
    if isinstance(info_or_run_dir, StackInfo):
        info = info_or_run_dir
        run_dir = Path(info.run_dir)
    else:
        run_dir = Path(info_or_run_dir)
        if not (run_dir / STACK_FILE).is_file():
            return
        info = StackInfo.load(run_dir)
    # The gateway first: it may still revoke leases in bao and write to postgres on its way out.
    openbao.stop_process(
        info.gateway_pid, expect=info.gateway_settings_path, timeout=_GATEWAY_STOP_TIMEOUT_S
    )
    stoppers = [
        threading.Thread(target=_stop_bao, args=(info,)),
        threading.Thread(target=issuer_process.stop, args=(info,)),
        threading.Thread(target=postgres.stop, args=(Path(info.pg_bin), Path(info.pg_data))),
    ]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join()
    for pid in (info.gateway_pid, info.bao_pid, info.issuer_pid):
        child = _children.pop(pid or 0, None)
        if child is not None:
            child.poll()
    pg_base = Path(info.pg_data).parent
    # A cluster outside the run dir is one of our private directories (see prepare_cluster);
    # the name check keeps a damaged stack.json from deleting anything else.
    if pg_base.name.startswith(postgres.PRIVATE_DIR_PREFIX):
        postgres.remove_cluster_dir(pg_base)
    postgres.remove_cluster_dir(run_dir)


@contextlib.contextmanager
def running_stack(run_dir: Path | None = None, *, gateway: bool = True) -> Iterator[StackInfo]:
    """``up`` on entry, ``down`` on exit (also on errors)."""
    info = up(run_dir, gateway=gateway)
    try:
        yield info
    finally:
        down(info)


def _prepare_run_dir(run_dir: Path | None) -> Path:
    if run_dir is None:
        return postgres.create_run_dir()
    run_dir = run_dir.absolute()
    if (run_dir / STACK_FILE).exists():
        raise ConfigError(
            f"a stack already uses {run_dir}",
            f"stop it first: airflow-hoop stack down {run_dir}",
        )
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"the run directory {run_dir} is not empty, and `stack down` removes it entirely",
            "name a new or empty directory",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)  # the postgres account must traverse it
    return run_dir


def _save(info: StackInfo) -> None:
    info.save()


def gateway_settings(
    info: StackInfo, port: int, setup: vault_setup.VaultSetup, db_password: str
) -> dict[str, Any]:
    """The gateway's settings for this stack, as the mapping written to gateway.yaml."""
    return {
        "host": ports.LOOPBACK,
        "port": port,
        "database_dsn": (
            f"host={ports.LOOPBACK} port={info.pg_port} dbname={info.gateway_db} "
            f"user={database_setup.GATEWAY_ROLE} password={db_password} sslmode=disable"
        ),
        "vault": {
            "url": info.bao_addr,
            "auth": {"method": "token", "token": setup.gateway_token},
            "identity_issuer": setup.identity_issuer,
            "identity_audience": vault_setup.IDENTITY_AUDIENCE,
            # The stack's gateway-only tests and benches sign their own steps (no Airflow):
            # the "trusted workers" mode, named so. Airflow tasks go through the issuer.
            "accept_trusted_workers": True,
            "database_mount": vault_setup.DATABASE_MOUNT,
            "transit_mount": vault_setup.TRANSIT_MOUNT,
            "checkpoint_key": vault_setup.CHECKPOINT_KEY,
            "step_token_policies": [vault_setup.STEP_CREDS_POLICY],
        },
        "connections": [
            {
                "name": WAREHOUSE_CONNECTION,
                "host": ports.LOOPBACK,
                "port": info.pg_port,
                "database": info.warehouse_db,
                "sslmode": "disable",
                "vault_role": vault_setup.DATABASE_ROLE,
                "vault_read_role": vault_setup.DATABASE_READ_ROLE,
                "allowed_dags": list(ALLOWED_DAGS),
                "approvals": APPROVAL_RULES,
                "masking": WAREHOUSE_MASKING,
            },
            shell_connection(),
        ],
        "api_keys": [
            {
                "name": "devstack-auditor",
                "sha256": ApiKey.digest(info.auditor_api_key),
                "role": "auditor",
            },
            *approver_keys(info),
        ],
        # Checkpoints are anchored in the run dir: outside the gateway database.
        "checkpoints": {"anchor_dir": info.anchor_dir or str(Path(info.run_dir) / ANCHOR_DIR)},
    }


def approver_keys(info: StackInfo) -> list[dict[str, Any]]:
    """The Airflow plugin's key (decides for the Airflow user) and a person's API key."""
    keys = []
    if info.approver_api_key:
        keys.append(
            {
                "name": "devstack-airflow-ui",
                "sha256": ApiKey.digest(info.approver_api_key),
                "role": "approver",
                "groups": [APPROVER_GROUP],
                "asserts_users": True,
            }
        )
    if info.reviewer_api_key:
        keys.append(
            {
                "name": "devstack-reviewer",
                "sha256": ApiKey.digest(info.reviewer_api_key),
                "role": "approver",
                "groups": [APPROVER_GROUP],
            }
        )
    return keys


def shell_connection() -> dict[str, Any]:
    """``ops_shell``: bash on the gateway host, with the step's warehouse user as PG* variables,
    its output masked by the warehouse policy's detectors.

    When the stack runs as root the commands run as ``nobody``: a root command could read the
    gateway's settings file and process memory, whatever its environment holds.
    """
    conn: dict[str, Any] = {
        "name": SHELL_CONNECTION,
        "type": "custom",
        "command": ["/bin/bash"],
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
        "database": WAREHOUSE_CONNECTION,
        "cwd_roots": [tempfile.gettempdir()],  # cwd= may name a directory in there
        "allowed_dags": list(ALLOWED_DAGS),
        "approvals": APPROVAL_RULES,
        "masking": SHELL_MASKING,
    }
    if os.geteuid() == 0:
        conn["run_as_user"] = "nobody"
    return conn


def write_gateway_settings(
    info: StackInfo, port: int, setup: vault_setup.VaultSetup, db_password: str
) -> Path:
    """Write gateway.yaml (0600) and check that ``GatewaySettings.load`` accepts it."""
    path = Path(info.gateway_settings_path)
    data = gateway_settings(info, port, setup, db_password)
    write_private(path, yaml.safe_dump(data, sort_keys=False))
    GatewaySettings.load(path)
    return path


def start_gateway(info: StackInfo, *, workers: int = 1) -> None:
    """Start the gateway of a stack brought up with ``gateway=False`` (e.g. after editing its
    settings, or with several worker processes); record its PID and wait until it is healthy."""
    info.gateway_pid = _start_gateway(info, workers=workers)
    _save(info)
    _wait_gateway_healthy(info)


def _start_gateway(info: StackInfo, *, workers: int = 1) -> int:
    cmd = [sys.executable, "-m", GATEWAY_MODULE, "--config", info.gateway_settings_path]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = openbao.spawn_service(cmd, Path(info.gateway_log), info.run_dir)
    _children[proc.pid] = proc
    return proc.pid


def _healthz_status(url: str) -> int | None:
    host_port = url.split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=1.0)
    try:
        conn.request("GET", "/api/healthz")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def _wait_gateway_healthy(info: StackInfo, timeout: float = _GATEWAY_HEALTH_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    pid = info.gateway_pid
    while True:
        status = _healthz_status(info.gateway_url)
        if status == 200:
            return
        exited = pid is not None and not openbao.is_running(pid)
        if exited or time.monotonic() > deadline:
            state = (
                "exited" if exited else f"not healthy after {timeout:.0f}s (last status {status})"
            )
            raise ConfigError(
                f"the gateway at {info.gateway_url} {state}; gateway.log ends with: "
                f"{openbao.tail(Path(info.gateway_log))}",
                "the stack was stopped and removed; fix the error above, or bring the stack "
                "up without the gateway (gateway=False) and run it by hand with "
                f"`{sys.executable} -m {GATEWAY_MODULE} --config <run dir>/{GATEWAY_CONFIG_FILE}`",
            )
        time.sleep(0.05)


def _stop_bao(info: StackInfo) -> None:
    host_port = info.bao_addr.split("://", 1)[1]
    openbao.stop_process(info.bao_pid, expect=f"-dev-listen-address={host_port}")
