"""The embedded stack, for real: processes, Vault configuration and per-step database users."""

from __future__ import annotations

import http.client
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import jwt
import psycopg
import psycopg.errors
import pytest

from airflow_hoop.devstack import ports, postgres, vault_setup
from airflow_hoop.devstack import stack as devstack
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.gateway.settings import ApiKey, GatewaySettings

STEP_KEY = "governed_etl/load/manual__2026-11-23T10:00:00+00:00/1"


def _client(stack: StackInfo, token: str | None = None) -> hvac.Client:
    return vault_setup.vault_client(stack.bao_addr, token)


@pytest.fixture(scope="module")
def settings(stack: StackInfo) -> GatewaySettings:
    return GatewaySettings.load(stack.gateway_settings_path)


@pytest.fixture
def gateway_vault(stack: StackInfo, settings: GatewaySettings) -> Iterator[hvac.Client]:
    """hvac with the gateway's own token, exactly as the gateway holds it."""
    assert settings.vault.auth.token is not None
    client = _client(stack, settings.vault.auth.token.get_secret_value())
    yield client
    client.adapter.close()


class StepUser:
    """A dynamic database user minted as the gateway does: through a per-step child token."""

    def __init__(self, stack: StackInfo, gateway_vault: hvac.Client, step_key: str) -> None:
        created = gateway_vault.auth.token.create(
            policies=[vault_setup.STEP_CREDS_POLICY], display_name=step_key, ttl="15m"
        )
        self.child = _client(stack, created["auth"]["client_token"])
        creds = self.child.secrets.database.generate_credentials(name=vault_setup.DATABASE_ROLE)
        self.lease_id: str = creds["lease_id"]
        self.lease_duration: int = creds["lease_duration"]
        self.username: str = creds["data"]["username"]
        self.password: str = creds["data"]["password"]
        self.stack = stack
        self.gateway_vault = gateway_vault

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.stack.pg_port,
            dbname=self.stack.warehouse_db,
            user=self.username,
            password=self.password,
            sslmode="disable",
            autocommit=True,
        )

    def revoke(self) -> None:
        self.gateway_vault.sys.revoke_lease(lease_id=self.lease_id)


@pytest.fixture
def step_user(stack: StackInfo, gateway_vault: hvac.Client) -> Iterator[Callable[[str], StepUser]]:
    users: list[StepUser] = []

    def make(step_key: str = STEP_KEY) -> StepUser:
        users.append(StepUser(stack, gateway_vault, step_key))
        return users[-1]

    yield make
    for user in users:
        user.revoke()  # idempotent in Vault: revoking a revoked lease is a no-op


def _role_exists(admin: psycopg.Connection, name: str) -> bool:
    return (
        admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None
    )


def _gone(pid: int, wait: float = 5.0) -> bool:
    """Whether ``pid`` has exited (a zombie awaiting its parent counts as exited)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def _http_status(url: str, path: str) -> int:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


# -- the stack as a whole ------------------------------------------------------------------


def test_stack_is_up_and_recorded(stack: StackInfo, admin_conn: Callable[..., Any]) -> None:
    assert _http_status(stack.bao_addr, "/v1/sys/health") == 200
    assert admin_conn().execute("SELECT 1").fetchone() == (1,)
    assert stack.gateway_pid, "the session stack starts the gateway"
    assert _http_status(stack.gateway_url, "/api/healthz") == 200
    assert StackInfo.load(stack.run_dir) == stack


def test_gateway_settings_match_the_stack(stack: StackInfo, settings: GatewaySettings) -> None:
    assert settings.vault.auth.token is not None
    assert settings.vault.auth.token.get_secret_value() != stack.bao_root_token
    assert settings.vault.identity_issuer == f"{stack.bao_addr}/v1/identity/oidc"
    warehouse = settings.connection("warehouse")
    assert warehouse is not None
    assert (warehouse.port, warehouse.database, warehouse.vault_role) == (
        stack.pg_port,
        stack.warehouse_db,
        "warehouse-rw",
    )
    # the auditor's key, the UI plugin's approver key and a person's approver key (approvals)
    keys = [stack.auditor_api_key, stack.approver_api_key, stack.reviewer_api_key]
    assert [k.sha256 for k in settings.api_keys] == [ApiKey.digest(k or "") for k in keys]
    assert [k.role for k in settings.api_keys] == ["auditor", "approver", "approver"]
    text = Path(stack.gateway_settings_path).read_text()
    assert all(k and k not in text for k in keys)


def test_secret_files_are_private(stack: StackInfo) -> None:
    for path in (
        stack.workload_key_path,
        stack.gateway_settings_path,
        Path(stack.run_dir) / "stack.json",
    ):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_free_port_pair_has_both_ports_free() -> None:
    port = ports.free_port_pair()
    assert ports.is_free(port) and ports.is_free(port + 1)
    assert ports.free_port(exclude={port}) != port


# -- dynamic users -------------------------------------------------------------------------


def test_step_user_names_the_dag_and_task(
    step_user: Callable[[str], StepUser], admin_conn: Callable[..., Any]
) -> None:
    user = step_user(STEP_KEY)
    # Vault turns the display name into "token-" + [A-Za-z0-9-]: "_" and "/" become "-".
    assert user.username.startswith("af_governed-etl-load-manual--2026-11-23t10"), user.username
    assert len(user.username) <= 63
    assert user.lease_duration == 15 * 60
    with user.connect() as conn:
        who = conn.execute("SELECT session_user, current_user").fetchone()
        assert who == (user.username, "warehouse_writer")
        sessions = admin_conn().execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (user.username,)
        )
        assert sessions.fetchone() == (1,)


def test_step_users_share_tables_and_revoke_drops_the_role(
    step_user: Callable[[str], StepUser], admin_conn: Callable[..., Any]
) -> None:
    table = f"shared_{uuid.uuid4().hex[:8]}"
    a = step_user("test_share/create/manual__1/1")
    b = step_user("test_share/append/manual__1/1")
    with a.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (n int)")
        conn.execute(f"INSERT INTO {table} VALUES (1)")
    with b.connect() as conn:
        assert conn.execute(f"SELECT n FROM {table}").fetchall() == [(1,)]
        conn.execute(f"INSERT INTO {table} VALUES (2)")
    admin = admin_conn()
    owner = admin.execute(
        "SELECT tableowner FROM pg_tables WHERE tablename = %s", (table,)
    ).fetchone()
    assert owner == ("warehouse_writer",)

    a.revoke()
    assert not _role_exists(admin, a.username)
    with pytest.raises(psycopg.OperationalError):
        a.connect()
    with b.connect() as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,)
    b.revoke()
    assert not _role_exists(admin, b.username)
    assert admin.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,)


def test_step_user_cannot_own_objects(step_user: Callable[[str], StepUser]) -> None:
    user = step_user("test_escape/reset_role/manual__1/1")
    with user.connect() as conn:
        conn.execute("SET ROLE NONE")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"CREATE TABLE escaped_{uuid.uuid4().hex[:8]} (n int)")


def test_step_user_cannot_reach_the_gateway_database(
    stack: StackInfo, step_user: Callable[[str], StepUser]
) -> None:
    user = step_user("test_escape/ledger/manual__1/1")
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(
            host="127.0.0.1",
            port=stack.pg_port,
            dbname=stack.gateway_db,
            user=user.username,
            password=user.password,
        )


def test_revoke_ends_open_sessions(
    step_user: Callable[[str], StepUser], admin_conn: Callable[..., Any]
) -> None:
    user = step_user("test_revoke/open_session/manual__1/1")
    conn = user.connect()
    try:
        user.revoke()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    assert not _role_exists(admin_conn(), user.username)


# -- what each token may do ----------------------------------------------------------------


def test_gateway_token_has_no_root_powers(
    gateway_vault: hvac.Client, bao_root: hvac.Client
) -> None:
    digest = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="
    signed = gateway_vault.secrets.transit.sign_data(
        name=vault_setup.CHECKPOINT_KEY, hash_input=digest
    )
    assert signed["data"]["signature"].startswith("vault:v1:")

    bao_root.secrets.transit.create_key(name="other-key", key_type="ed25519")
    refused: list[Callable[[], Any]] = [
        gateway_vault.sys.list_policies,
        lambda: gateway_vault.sys.read_policy(name="hoop-gateway"),
        lambda: gateway_vault.secrets.transit.sign_data(name="other-key", hash_input=digest),
        lambda: gateway_vault.secrets.transit.rotate_key(name=vault_setup.CHECKPOINT_KEY),
        lambda: gateway_vault.secrets.transit.create_key(name="gateway-made", key_type="ed25519"),
        lambda: gateway_vault.read("database/config/warehouse"),
        lambda: gateway_vault.write_data(
            "auth/token/create-orphan", data={"policies": ["default"]}
        ),
    ]
    for call in refused:
        with pytest.raises(hvac.exceptions.Forbidden):
            call()


def test_gateway_cannot_mint_tokens_beyond_its_policies(gateway_vault: hvac.Client) -> None:
    with pytest.raises((hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest)):
        gateway_vault.auth.token.create(policies=["root"], display_name=STEP_KEY, ttl="15m")


def _workload_jwt(stack: StackInfo, **claims: str) -> str:
    now = int(time.time())
    body = {
        "iss": stack.jwt_issuer,
        "aud": "openbao",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        **claims,
    }
    return jwt.encode(body, Path(stack.workload_key_path).read_bytes(), algorithm="EdDSA")


@pytest.mark.parametrize("triggered_by", ["alice", None])
def test_step_login_yields_an_identity_token_and_no_credentials(
    stack: StackInfo, triggered_by: str | None
) -> None:
    step = {
        "dag_id": "test_identity",
        "task_id": "probe",
        "run_id": f"manual__{uuid.uuid4().hex[:6]}",
        "try_number": "1",
        "map_index": "-1",
    }
    if triggered_by:
        step["triggered_by"] = triggered_by
    sub = "/".join(step[k] for k in ("dag_id", "task_id", "run_id", "try_number"))
    client = _client(stack)
    login = client.auth.jwt.jwt_login(
        role=stack.jwt_role,
        jwt=_workload_jwt(stack, sub=sub, **step),
        path=vault_setup.TRUSTED_JWT_MOUNT,
        use_token=False,
    )
    client.token = login["auth"]["client_token"]
    try:
        token = client.secrets.identity.generate_signed_id_token(
            name=vault_setup.TRUSTED_IDENTITY_ROLE
        )
        claims = jwt.decode(token["data"]["token"], options={"verify_signature": False})
        assert claims["iss"] == f"{stack.bao_addr}/v1/identity/oidc"
        assert claims["aud"] == "hoop-gateway"
        assert {k: claims[k] for k in step} == step
        # An absent claim renders as "" rather than breaking the template.
        assert claims["triggered_by"] == (triggered_by or "")
        # A worker-signed login says so, whatever its JWT claimed.
        assert claims["attested_by"] == vault_setup.TRUSTED_ATTESTED
        # The task proves who it is; it never mints database credentials itself.
        with pytest.raises(hvac.exceptions.Forbidden):
            client.secrets.database.generate_credentials(name=vault_setup.DATABASE_ROLE)
    finally:
        client.auth.token.revoke_self()


# -- a second, private stack: run dir given, gateway off, down from the directory ----------


def test_up_in_a_given_dir_and_down_from_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "stack"
    info = devstack.up(run_dir, gateway=False)
    try:
        assert info.gateway_pid is None
        # pytest's tmp_path is 0700 under /tmp: postgres cannot traverse it, so the cluster
        # lives in a private directory elsewhere.
        pg_base = Path(info.pg_data).parent
        assert run_dir not in pg_base.parents
        with psycopg.connect(info.admin_dsn(info.warehouse_db)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert _http_status(info.bao_addr, "/v1/sys/health") == 200
        postmaster = postgres.postmaster_pid(Path(info.pg_data))
    finally:
        devstack.down(run_dir)
    assert _gone(info.bao_pid)
    assert postmaster is not None and _gone(postmaster)
    assert not run_dir.exists()
    assert not pg_base.exists()
    devstack.down(run_dir)  # idempotent
    devstack.down(info)
