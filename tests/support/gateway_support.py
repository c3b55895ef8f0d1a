"""Helpers for the gateway tests: step clients with real Vault identity tokens, ledger reads,
and an extra gateway process with changed settings (same database, same Vault)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import psycopg
import yaml

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.ledger.chain import StoredRecord
from airflow_hoop.ledger.records import LedgerRecord, StepRef
from airflow_hoop.task.vault import StepVaultSession
from airflow_hoop.task.vault_config import StepVaultConfig
from airflow_hoop.wire.sessions import VAULT_ACCESSOR_HEADER

CONNECTION = "warehouse"


def new_step(dag_id: str = "test_gateway", task_id: str = "task", try_number: int = 1) -> StepRef:
    """A step with a run id of its own, so that tests never share a step context."""
    return StepRef(
        dag_id=dag_id,
        task_id=task_id,
        run_id=f"manual__{uuid.uuid4().hex[:10]}",
        try_number=try_number,
    )


def auth_headers(token: str, accessor: str | None) -> dict[str, str]:
    """A step's request headers: its identity token, and its Vault token by accessor."""
    headers = {"Authorization": f"Bearer {token}"}
    if accessor:
        headers[VAULT_ACCESSOR_HEADER] = accessor
    return headers


class StepClient:
    """One step: logs in to Vault as the step and calls a gateway with its identity token."""

    def __init__(
        self, stack: StackInfo, step: StepRef, url: str | None = None, **vault: Any
    ) -> None:
        self.stack = stack
        # No Airflow here: the step signs its own claims ("trusted workers" mode), and the
        # gateway records the step so (its Vault identity token says who attests it).
        self.step = step.model_copy(update={"attested_by": "trusted-workers"})
        config = StepVaultConfig(**{**stack.trusted_workers_vault(), **vault})
        self.vault = StepVaultSession(config, step)
        self.http = httpx.Client(base_url=url or stack.gateway_url, trust_env=False, timeout=60)

    def token(self) -> str:
        return self.vault.identity_token()

    def headers(self) -> dict[str, str]:
        """The step's identity token and its Vault token's accessor, as the client sends them."""
        return auth_headers(self.token(), self.vault.accessor())

    def exec(
        self,
        script: str,
        parameters: Any = None,
        *,
        autocommit: bool = False,
        metadata: dict[str, str] | None = None,
        connection: str = CONNECTION,
    ) -> httpx.Response:
        body: dict[str, Any] = {"connection": connection, "script": script}
        if parameters is not None or autocommit:
            body["airflow_hoop"] = {"parameters": parameters, "autocommit": autocommit}
        if metadata is not None:
            body["metadata"] = metadata
        return self.http.post("/api/sessions", json=body, headers=self.headers())

    def post_raw(self, content: bytes) -> httpx.Response:
        headers = {**self.headers(), "Content-Type": "application/json"}
        return self.http.post("/api/sessions", content=content, headers=headers)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params or None, headers=self.headers())

    def post(self, path: str) -> httpx.Response:
        return self.http.post(path, headers=self.headers())

    def end(self) -> httpx.Response:
        return self.post("/api/airflow-hoop/steps/end")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.end()
        with contextlib.suppress(Exception):
            self.vault.revoke()
        self.http.close()


@contextlib.contextmanager
def step_client(
    stack: StackInfo, step: StepRef | None = None, url: str | None = None, **vault: Any
) -> Iterator[StepClient]:
    client = StepClient(stack, step or new_step(), url, **vault)
    try:
        yield client
    finally:
        client.close()


def auditor(stack: StackInfo, url: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=url or stack.gateway_url,
        trust_env=False,
        timeout=30,
        headers={"Authorization": f"Bearer {stack.auditor_api_key}"},
    )


def ledger_rows(stack: StackInfo) -> list[StoredRecord]:
    """Every record, read through the gateway's read-only ledger endpoint."""
    rows: list[StoredRecord] = []
    after = 0
    with auditor(stack) as client:
        while True:
            page = client.get("/api/airflow-hoop/ledger", params={"after_seq": after}).json()
            rows += [StoredRecord.model_validate(r) for r in page["records"]]
            if page["next_after_seq"] is None:
                return rows
            after = page["next_after_seq"]


def step_rows(stack: StackInfo) -> list[StoredRecord]:
    """Every record but the gateway's signed checkpoints, which the signer appends at any time
    (every N records or T seconds, and when a gateway stops)."""
    return [r for r in ledger_rows(stack) if '"kind":"checkpoint"' not in r.body]


def ledger_records(stack: StackInfo) -> list[LedgerRecord]:
    """Parsed records, checkpoints excluded (see ``step_rows``)."""
    return [LedgerRecord.model_validate_json(r.body) for r in step_rows(stack)]


def session_records(stack: StackInfo, session_id: str) -> list[LedgerRecord]:
    return [r for r in ledger_records(stack) if getattr(r.body, "session_id", None) == session_id]


def ledger_count(stack: StackInfo) -> int:
    """Records in the ledger, checkpoints excluded (see ``step_rows``)."""
    with psycopg.connect(stack.admin_dsn(stack.gateway_db)) as conn:
        row = conn.execute("SELECT count(*) FROM ledger WHERE kind <> 'checkpoint'").fetchone()
        assert row is not None
        return int(row[0])


def gateway_dsn(stack: StackInfo) -> str:
    """The gateway role's own DSN, as the stack wrote it into gateway.yaml."""
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    return str(settings["database_dsn"])


def wait_done(client: StepClient, session_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info = client.get(f"/api/sessions/{session_id}").json()
        if info["status"] == "done":
            return dict(info)
        assert time.monotonic() < deadline, f"session {session_id} not done: {info}"
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(port: int, tls: bool = False) -> bool:
    conn: http.client.HTTPConnection
    if tls:  # only "is it up": the tests that use TLS check the certificate themselves
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=1.0, context=ssl._create_unverified_context()
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/api/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def extra_gateway(
    stack: StackInfo, name: str, env: dict[str, str] | None = None, **overrides: Any
) -> Iterator[str]:
    """A second gateway process (same database and Vault) with some settings changed.

    ``env`` adds variables to the process's environment (e.g. ``HOOP_GATEWAY_*`` settings).
    """
    with gateway_process(stack, name, env, **overrides) as gateway:
        yield gateway.url


class GatewayProcess(NamedTuple):
    """A gateway process of a test: where it listens, its settings file, log and process."""

    url: str
    settings_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def gateway_process(
    stack: StackInfo, name: str, env: dict[str, str] | None = None, **overrides: Any
) -> Iterator[GatewayProcess]:
    """``extra_gateway``, with the process, its settings file and its log."""
    env_extra = dict(env or {})
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    port = free_port()
    settings.update(overrides, port=port)
    path = Path(stack.run_dir) / f"gateway-{name}.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(settings, fh)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(env_extra)
    log_path = Path(stack.run_dir) / f"gateway-{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_hoop.gateway", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        tls = bool(settings.get("tls"))
        while not healthy(port, tls):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway {name} did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        yield GatewayProcess(
            f"{'https' if tls else 'http'}://127.0.0.1:{port}", path, log_path, proc
        )
    finally:
        if proc.poll() is None:  # our own child, by its Popen handle
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.asynccontextmanager
async def certified_store(stack: StackInfo, **pool: int) -> AsyncIterator[GatewayStore]:
    """The gateway role's store as a gateway process opens it: its batch key certified by
    Vault first, so every append is signed (ledger/batch.py)."""
    from airflow_hoop.gateway.ledger_io.process_key import ProcessKeys
    from airflow_hoop.gateway.settings import GatewaySettings
    from airflow_hoop.gateway.vault import GatewayVaultClient

    settings = GatewaySettings.load(stack.gateway_settings_path)
    store, vault = GatewayStore(gateway_dsn(stack), **pool), GatewayVaultClient(settings.vault)
    await store.open()
    await vault.login()
    keys = ProcessKeys(settings.checkpoints, store, vault)
    await keys.start()
    try:
        yield store
    finally:
        await keys.stop()
        await store.close()
        vault.close()
