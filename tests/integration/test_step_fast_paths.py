"""The governed step's fast paths keep their guarantees (issue #2's overhead work).

- ``steps/end?revoke=background``: answered once the step's connections are closed; the user
  is revoked and recorded right after. A gateway killed in between writes no false record and
  leaves the lease to its TTL (and to the recovery sweep).
- A verified identity token is remembered by its digest: a changed token is verified afresh.
- An autocommit exec with no transaction open runs without BEGIN/COMMIT round trips, so it is
  still atomic per script and runs what refuses a transaction block.

All against the real stack (Postgres, OpenBao, gateway processes); the one fault, a Vault that
stops answering mid-revoke, is a real SIGSTOP of the OpenBao process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac.exceptions
import pytest
import yaml
from support.faults_support import GatewayProcess, role_exists, wait_until
from support.gateway_support import (
    StepClient,
    auth_headers,
    certified_store,
    extra_gateway,
    ledger_records,
    ledger_rows,
    new_step,
    step_client,
)

from airflow_hoop.devstack.database_setup import GATEWAY_ROLE
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.errors import LedgerError
from airflow_hoop.hooks.dbapi import GatewayConnection
from airflow_hoop.ledger.records import (
    CredentialIssued,
    CredentialRevoked,
    PolicyRefused,
    StepRef,
)
from airflow_hoop.ledger.verify import verify_chain
from airflow_hoop.task.step_session import GovernedStep, HoopConnectionConfig
from airflow_hoop.task.vault_config import StepVaultConfig
from airflow_hoop.wire.sessions import ExecResponse, StepEndResponse

END = "/api/airflow-hoop/steps/end"


def _ok(response: Any) -> ExecResponse:
    assert response.status_code == 200, response.text
    result = ExecResponse.model_validate(response.json())
    assert result.output_status == "success", result.output
    return result


def _session_user(client: StepClient) -> str:
    result = _ok(client.exec("SELECT session_user"))
    assert result.airflow_hoop is not None
    return str(result.airflow_hoop.rows[0][0])


def _credential_records(stack: StackInfo, step: StepRef) -> list[Any]:
    return [
        r.body
        for r in ledger_records(stack)
        if r.step is not None
        and r.step.key == step.key
        and isinstance(r.body, (CredentialIssued, CredentialRevoked))
    ]


@pytest.fixture
def table(stack: StackInfo, admin_conn: Any) -> str:
    name = f"fast_{os.urandom(5).hex()}"
    conn = admin_conn()
    conn.execute(f"CREATE TABLE {name} (n int)")
    conn.execute(f"ALTER TABLE {name} OWNER TO warehouse_writer")
    return name


# -- step end in the background ----------------------------------------------------------------
def test_background_revoke_answers_then_revokes_and_records(stack: StackInfo) -> None:
    with step_client(stack) as client:
        user = _session_user(client)
        response = client.http.post(END, params={"revoke": "background"}, headers=client.headers())
        ended = StepEndResponse.model_validate(response.json())
        assert ended.revoked_db_users == [user] and ended.revocation == "in-progress"
        wait_until("the user was dropped", lambda: not role_exists(stack, user), timeout=15)
        records = wait_until(
            "credential.revoked was recorded",
            lambda: [
                b
                for b in _credential_records(stack, client.step)
                if isinstance(b, CredentialRevoked) and b.db_user == user
            ],
            timeout=15,
        )
        issued = [
            b
            for b in _credential_records(stack, client.step)
            if isinstance(b, CredentialIssued) and b.db_user == user
        ]
        assert [(r.reason, r.lease_id) for r in records] == [("step-end", issued[0].lease_id)]
        # The step's token died with it: ending again and running again are refused.
        again = client.http.post(END, params={"revoke": "background"}, headers=client.headers())
        assert again.status_code == 401
        assert client.exec("SELECT session_user").status_code == 401


def test_governed_step_end_defaults_to_background_revoke(stack: StackInfo) -> None:
    """The task side (GovernedStep, as hooks and the bench use it) ends in the background."""
    config = HoopConnectionConfig(
        gateway_url=stack.gateway_url,
        vault=StepVaultConfig(**stack.trusted_workers_vault()),
    )
    assert config.revoke_at_end == "background"
    step = GovernedStep(config, new_step(task_id="fast_end"))
    conn = GatewayConnection(step, "warehouse")
    conn.autocommit = True
    user = conn.cursor().execute("SELECT session_user").fetchall()[0][0]
    step.end()
    wait_until("the user was dropped", lambda: not role_exists(stack, user), timeout=15)
    wait_until(
        "credential.revoked was recorded",
        lambda: any(
            isinstance(b, CredentialRevoked) and b.db_user == user and b.reason == "step-end"
            for b in _credential_records(stack, step.step)
        ),
        timeout=15,
    )


@pytest.fixture
def paused_vault(stack: StackInfo) -> Iterator[Any]:
    """Stops the OpenBao process (SIGSTOP) on demand; always resumes it (SIGCONT)."""
    paused: list[bool] = []

    def pause() -> None:
        os.kill(stack.bao_pid, signal.SIGSTOP)
        paused.append(True)

    try:
        yield pause
    finally:
        if paused:
            os.kill(stack.bao_pid, signal.SIGCONT)


def test_gateway_killed_before_a_background_revoke_writes_no_false_record(
    stack: StackInfo, paused_vault: Any, bao_root: Any
) -> None:
    """Vault stops answering, the end is still answered, then the gateway dies (SIGKILL).

    The user is not revoked by it, and no record says it was: the lease is left to its TTL
    until the recovery sweep of a live gateway revokes it and records ``interrupted``.
    """
    # The stack's own recovery timings: quicker ones would declare its main gateway dead.
    recovery = yaml.safe_load(Path(stack.gateway_settings_path).read_text()).get("recovery", {})
    gateway = GatewayProcess(stack, "fast-end-killed", recovery=recovery)
    try:
        with step_client(stack, url=gateway.url) as client:
            user = _session_user(client)
            headers = client.headers()  # the identity token, fetched while Vault answers
            paused_vault()
            started = time.monotonic()
            response = client.http.post(
                END, params={"revoke": "background"}, headers=headers, timeout=10
            )
            answered_in = time.monotonic() - started
            gateway.sigkill()
            os.kill(stack.bao_pid, signal.SIGCONT)
            ended = StepEndResponse.model_validate(response.json())
            assert ended.revoked_db_users == [user] and ended.revocation == "in-progress"
            assert answered_in < 5, f"the answer waited for Vault ({answered_in:.1f}s)"
            lease = next(
                b.lease_id
                for b in _credential_records(stack, client.step)
                if isinstance(b, CredentialIssued)
            )
            still_there = role_exists(stack, user)
            revoked = [
                b
                for b in _credential_records(stack, client.step)
                if isinstance(b, CredentialRevoked)
            ]
            assert all(b.reason != "step-end" for b in revoked), revoked
            if not still_there:  # a live gateway's recovery sweep got there first
                wait_until(
                    "the sweep recorded the revocation",
                    lambda: (
                        [
                            b.reason
                            for b in _credential_records(stack, client.step)
                            if isinstance(b, CredentialRevoked)
                        ]
                        == ["interrupted"]
                    ),
                    timeout=15,
                )
                return
            with contextlib.suppress(hvac.exceptions.InvalidRequest):  # swept meanwhile
                ttl = bao_root.sys.read_lease(lease_id=lease)["data"]["ttl"]
                assert 0 < ttl <= 3600  # left to expire on its own
                bao_root.sys.revoke_lease(lease_id=lease)  # tidy up the shared stack
    finally:
        gateway.stop()


def test_a_revoke_vault_did_not_confirm_is_recorded_only_once_confirmed(
    stack: StackInfo, paused_vault: Any
) -> None:
    """Vault stops answering during a waited step end: no record claims the revocation.

    The step's connection is closed either way. The gateway retries the revocation (the
    reaper; revoking is idempotent) once Vault answers again, and only then records it.
    """
    recovery = yaml.safe_load(Path(stack.gateway_settings_path).read_text()).get("recovery", {})
    gateway = GatewayProcess(
        stack, "revoke-unconfirmed", recovery=recovery, vault_timeout_seconds=1.0
    )
    try:
        with step_client(stack, url=gateway.url) as client:
            user = _session_user(client)
            headers = client.headers()
            paused_vault()
            response = client.http.post(END, params={"revoke": "wait"}, headers=headers, timeout=30)
            assert response.status_code == 200, response.text

            def revoked() -> list[Any]:
                records = _credential_records(stack, client.step)
                return [b for b in records if isinstance(b, CredentialRevoked)]

            assert revoked() == []  # Vault did not answer: nothing claims it was revoked
            assert "could not revoke" in gateway.log_text()
            os.kill(stack.bao_pid, signal.SIGCONT)
            wait_until("the retried revocation is recorded", lambda: len(revoked()) == 1, 30)
            assert [b.reason for b in revoked()] == ["step-end"]
            assert not role_exists(stack, user)
    finally:
        gateway.stop()


# -- identity token cache ----------------------------------------------------------------------
def test_a_changed_token_is_verified_again(stack: StackInfo) -> None:
    with step_client(stack) as client:
        token = client.token()
        accessor = client.vault.accessor()
        assert client.http.get("/api/sessions", headers=auth_headers(token, accessor))
        head, payload, signature = token.split(".")
        forged = (
            f"{head}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
        )
        response = client.http.get("/api/sessions", headers=auth_headers(forged, accessor))
        assert response.status_code == 401, response.text
        assert response.json()["message"].startswith("[gateway auth] identity token rejected")
        ok = client.http.get("/api/sessions", headers=auth_headers(token, accessor))
        assert ok.status_code == 200


# -- autocommit without transaction round trips ------------------------------------------------
def test_autocommit_script_is_atomic_and_committed_at_once(
    stack: StackInfo, table: str, admin_conn: Any
) -> None:
    with step_client(stack) as client:
        failed = client.exec(f"INSERT INTO {table} VALUES (1); SELECT 1/0", autocommit=True)
        assert failed.json()["output_status"] == "failed"
        count = f"SELECT count(*) FROM {table}"
        assert admin_conn().execute(count).fetchone()[0] == 0  # the whole script or nothing
        _ok(client.exec(f"INSERT INTO {table} VALUES (2)", autocommit=True))
        assert admin_conn().execute(count).fetchone()[0] == 1  # committed when answered
        # Without autocommit the step's transaction still spans execs.
        _ok(client.exec(f"INSERT INTO {table} VALUES (3)"))
        assert admin_conn().execute(count).fetchone()[0] == 1
        _ok(client.exec("ROLLBACK"))
        assert admin_conn().execute(count).fetchone()[0] == 1


def test_autocommit_runs_what_refuses_a_transaction_block(stack: StackInfo, table: str) -> None:
    with step_client(stack) as client:
        _ok(client.exec(f"VACUUM {table}", autocommit=True))
        refused = client.exec(f"VACUUM {table}")  # no autocommit: inside the step's transaction
        assert refused.json()["output_status"] == "failed"
        assert "transaction block" in refused.json()["output"]


def test_strict_masking_undoes_an_autocommit_write_it_withholds(
    stack: StackInfo, table: str, admin_conn: Any
) -> None:
    """Under a strict policy withheld output is undone, so autocommit keeps BEGIN/COMMIT."""
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    warehouse = next(c for c in settings["connections"] if c["name"] == "warehouse")
    strict = {
        **{k: v for k, v in warehouse.items() if k not in ("masking", "approvals")},
        "name": "wh_strict_fast",
        "masking": {
            "name": "strict-fast",
            "mode": "strict",
            "detectors": ["all"],
            "max_cell_bytes": 100,
        },
    }
    with (
        extra_gateway(stack, "fast-strict", connections=[strict]) as url,
        step_client(stack, url=url) as client,
    ):
        withheld = client.exec(
            f"INSERT INTO {table} VALUES (1) RETURNING repeat('x', 500) AS blob",
            autocommit=True,
            connection="wh_strict_fast",
        ).json()
        assert withheld["exit_code"] == 1 and "(strict)" in withheld["output"]
        assert admin_conn().execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
        _ok(
            client.exec(
                f"INSERT INTO {table} VALUES (2)", autocommit=True, connection="wh_strict_fast"
            )
        )
        assert admin_conn().execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 1


def test_extra_gateway_serves_background_end(stack: StackInfo) -> None:
    """A second process answers the same way (the mode is per request, not per process)."""
    with extra_gateway(stack, "fast-end") as url, step_client(stack, url=url) as client:
        user = _session_user(client)
        bad = client.http.post(END, params={"revoke": "later"}, headers=client.headers())
        assert bad.status_code == 422
        waited = client.http.post(END, params={"revoke": "wait"}, headers=client.headers())
        answer = waited.json()
        assert {k: answer[k] for k in ("step", "revoked_db_users", "revocation")} == {
            "step": client.step.key,
            "revoked_db_users": [user],
            "revocation": "done",
        }
        assert answer["checkpoint"] is not None  # the signing state at the step's end
        assert not role_exists(stack, user)


# -- ledger appends in one round trip ----------------------------------------------------------
def test_appends_on_a_moved_head_still_chain(stack: StackInfo) -> None:
    """A writer seals on the head its last commit left; another writer moves it meanwhile."""
    body = PolicyRefused(connection="none", reason="appender head test")

    async def scenario() -> list[int]:
        async with (
            certified_store(stack) as mine,
            certified_store(stack) as other,
        ):
            first = await mine.append(None, "test", body)  # reads the head (two trips)
            second = await mine.append(None, "test", body)  # on the head it left (one trip)
            assert mine._appender._head == (second.seq, second.hash)
            moved = await other.append(None, "test", body)  # mine's head is stale now
            third = await mine.append(None, "test", body)  # refused, then re-read and sealed
            assert third.seq > moved.seq > second.seq > first.seq
            return [first.seq, second.seq, moved.seq, third.seq]

    seqs = asyncio.run(scenario())
    rows = ledger_rows(stack)
    assert verify_chain(rows).ok
    assert {r.seq for r in rows} >= set(seqs)


def test_failed_appends_leave_the_connection_usable(stack: StackInfo, admin_conn: Any) -> None:
    """A real fault, repeated on one pooled connection: the superuser revokes INSERT on the
    ledger, an append fails mid-pipeline, the grant returns. Statements psycopg would have
    prepared after the failing one must not leave its prepared-statement cache out of step
    with the server (every later append failed with "prepared statement does not exist")."""
    gw = admin_conn(stack.gateway_db)
    body = PolicyRefused(connection="none", reason="appender failure test")

    async def scenario() -> int:
        failed = 0
        async with certified_store(stack, min_size=1, max_size=1) as store:
            for i in range(40):
                if i % 4 == 3:
                    gw.execute(f"REVOKE INSERT ON ledger FROM {GATEWAY_ROLE}")
                    try:
                        await store.append(None, "test", body)
                    except LedgerError:
                        failed += 1
                    finally:
                        gw.execute(f"GRANT INSERT ON ledger TO {GATEWAY_ROLE}")
                else:
                    await store.append(None, "test", body)  # raises if the cache went wrong
        return failed

    assert asyncio.run(scenario()) == 10


# -- client setup --------------------------------------------------------------------------------
def test_gateway_clients_share_one_verifying_tls_context() -> None:
    """Built once per process (loading the CA bundle costs ~40 ms of CPU per client), and
    still the verifying default: certificates and host names are checked."""
    from airflow_hoop.client.tls import verifying_context

    context = verifying_context()
    assert context is verifying_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs() or context.cert_store_stats()["x509_ca"] > 0
