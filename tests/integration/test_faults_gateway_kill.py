"""Fault: the gateway process is killed (SIGKILL) while a step's long statement runs.

Real processes throughout: a stack of this module's own (Postgres, OpenBao), gateway
processes this test starts and kills, a real step identity from Vault. What must hold:
the task side fails with a message naming the gateway; a gateway started afterwards closes the
session in the ledger as ``interrupted``, revokes the step's database user (its running
statement ends with it) and kills a shell command the dead gateway left; ``audit verify``
passes. Without any gateway, the lease's expiry alone removes the user: the documented bound.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.faults_support import (
    GatewayProcess,
    at,
    backends_of,
    gateway,
    gateway_db,
    role_exists,
    start_running,
    verify_ledger,
    wait_until,
)
from support.gateway_support import StepClient, ledger_records, new_step, step_client
from support.shell_support import command_pids, wait_no_command

from airflow_hoop.client.http import GatewayClient
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.errors import GatewayUnavailableError
from airflow_hoop.ledger.records import CredentialIssued, CredentialRevoked, SessionResult
from airflow_hoop.wire.sessions import ExecRequest

pytestmark = pytest.mark.faults


def _open_session(stack: StackInfo, step_key: str) -> Any:
    with gateway_db(stack) as conn:
        return conn.execute(
            "SELECT id, instance_id FROM sessions WHERE step_key = %s AND status = 'open'",
            (step_key,),
        ).fetchone()


def _db_user(stack: StackInfo, url: str, step_key: str) -> str:
    issued = [
        r.body
        for r in ledger_records(at(stack, url))
        if isinstance(r.body, CredentialIssued) and r.step and r.step.key == step_key
    ]
    assert len(issued) == 1, issued
    return issued[0].db_user


def test_sigkill_during_a_long_statement_is_swept_revoked_and_verifiable(
    fstack: StackInfo,
) -> None:
    victim = GatewayProcess(fstack, "victim")
    try:
        with step_client(fstack, new_step("test_faults"), url=victim.url) as step:
            failure: list[BaseException] = []

            def run_task() -> None:  # the task side, as the operator runs it
                with GatewayClient(
                    victim.url, step.token, vault_accessor=step.vault.accessor
                ) as client:
                    try:
                        client.exec(
                            ExecRequest(connection="warehouse", script="SELECT pg_sleep(120)")
                        )
                    except BaseException as exc:
                        failure.append(exc)

            task = threading.Thread(target=run_task)
            task.start()
            row = wait_until("session open", lambda: _open_session(fstack, step.step.key), 30)
            session_id = str(row[0])
            user = _db_user(fstack, victim.url, step.step.key)
            wait_until("pg_sleep running", lambda: backends_of(fstack, user) > 0, 10)

            victim.sigkill()
            task.join(30)
            assert len(failure) == 1 and isinstance(failure[0], GatewayUnavailableError)
            assert "gateway at " + victim.url in str(failure[0])
            # Nothing closed it: the dead gateway wrote nothing, the user still exists.
            assert _open_session(fstack, step.step.key) is not None
            assert role_exists(fstack, user)

            started = time.monotonic()
            with gateway(fstack, "survivor") as survivor:
                # Same host, PID gone: declared dead by the startup sweep at once.
                wait_until(
                    "session closed", lambda: _open_session(fstack, step.step.key) is None, 10
                )
                swept_in = time.monotonic() - started
                wait_until("user dropped", lambda: not role_exists(fstack, user), 10)
                assert backends_of(fstack, user) == 0, "the statement outlived its user"

                records = [
                    r
                    for r in ledger_records(at(fstack, survivor.url))
                    if r.step and r.step.key == step.step.key
                ]
                results = [r.body for r in records if isinstance(r.body, SessionResult)]
                assert len(results) == 1
                result = results[0]
                assert result.session_id == session_id
                assert result.status == "interrupted" and result.exit_code == -2
                assert "declared dead" in (result.error or "")
                revoked = [r.body for r in records if isinstance(r.body, CredentialRevoked)]
                assert [(r.db_user, r.reason) for r in revoked] == [(user, "interrupted")]
                info = (
                    StepClient(fstack, step.step, survivor.url)
                    .get(f"/api/sessions/{session_id}")
                    .json()
                )
                assert info["status"] == "done" and info["exit_code"] == -2
                assert "interrupted" in info["output"]
                verify_ledger(fstack, survivor.url)
            print(f"\nsweep closed the session {swept_in:.2f}s after the survivor started")
    finally:
        victim.stop()


def test_a_shell_command_of_a_killed_gateway_is_killed_by_the_sweep(fstack: StackInfo) -> None:
    victim = GatewayProcess(fstack, "shell-victim")
    try:
        with step_client(fstack, new_step("test_faults"), url=victim.url) as step:
            script = "pwd; setsid sleep 1000 </dev/null >/dev/null 2>&1 & sleep 1000"
            session_id = start_running(step, script, "ops_shell")
            out = wait_until(
                "working directory printed",
                lambda: (step.get(f"/api/sessions/{session_id}").json()["output"] or "").split(),
                10,
            )
            workdir = out[0]
            assert command_pids(workdir)
            victim.sigkill()
            # The sandbox dies with the gateway process that started it (--die-with-parent),
            # setsid included: nothing is left for the sweep to find.
            assert wait_no_command(workdir, 5), "the command outlived a SIGKILLed gateway"
            with gateway(fstack, "shell-survivor"):
                wait_until(
                    "session closed",
                    lambda: _open_session(fstack, step.step.key) is None,
                    10,
                )
    finally:
        victim.stop()


def test_without_any_gateway_the_lease_expiry_removes_the_user(fstack: StackInfo) -> None:
    """The bound when no gateway comes back: Vault drops the user when its lease expires."""
    ttl = 6
    victim = GatewayProcess(
        fstack,
        "short-lease",
        vault={**_vault(fstack), "step_token_ttl_seconds": ttl},
        lease_expiry_margin_seconds=1,
    )
    try:
        with step_client(fstack, new_step("test_faults"), url=victim.url) as step:
            answer = step.exec("SELECT 1")
            assert answer.status_code == 200, answer.text
            user = _db_user(fstack, victim.url, step.step.key)
            assert role_exists(fstack, user)
            victim.sigkill()
            killed_at = time.monotonic()
            wait_until(
                "user dropped at lease expiry", lambda: not role_exists(fstack, user), ttl + 10
            )
            gone_after = time.monotonic() - killed_at
            assert gone_after <= ttl + 10
            print(f"\nuser {user} gone {gone_after:.1f}s after the kill (lease ttl {ttl}s)")
    finally:
        victim.stop()


def _vault(stack: StackInfo) -> dict[str, Any]:
    return dict(yaml.safe_load(Path(stack.gateway_settings_path).read_text())["vault"])
