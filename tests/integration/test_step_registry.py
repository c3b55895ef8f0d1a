"""A step's token dies with the step, and a step lives on one gateway process (issue #15, 6-7).

Real gateway processes on one gateway database, real OpenBao identity tokens, real PostgreSQL
roles. The replayed token is the step's own, taken before its end, as a hostile DAG author who
kept it would send it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.wire.sessions import VAULT_ACCESSOR_HEADER
from tests.support.gateway_support import CONNECTION, StepClient, extra_gateway, new_step


def _roles(admin_conn: Callable[..., psycopg.Connection]) -> set[str]:
    return {r[0] for r in admin_conn().execute("SELECT rolname FROM pg_roles").fetchall()}


def _refusals(stack: StackInfo, step: StepClient, reason: str) -> int:
    with psycopg.connect(stack.admin_dsn(stack.gateway_db)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger WHERE kind = 'policy.refused' AND run_id = %s "
            "AND body LIKE %s",
            (step.step.run_id, f"%{reason}%"),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _revoked_for(stack: StackInfo, user: str) -> list[str]:
    """Reasons of the ``credential.revoked`` records of database user ``user``."""
    deadline = time.monotonic() + 10
    while True:
        with psycopg.connect(stack.admin_dsn(stack.gateway_db)) as conn:
            rows = conn.execute(
                "SELECT body::jsonb->'body'->>'reason' FROM ledger "
                "WHERE kind = 'credential.revoked' AND body::jsonb->'body'->>'db_user' = %s",
                (user,),
            ).fetchall()
        if rows or time.monotonic() > deadline:
            return [r[0] for r in rows]
        time.sleep(0.1)


def _replay(url: str, sent: dict[str, str], script: str = "SELECT 1") -> httpx.Response:
    """An exec with headers a step sent before (its identity token and Vault accessor)."""
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
        return http.post(
            "/api/sessions", json={"connection": CONNECTION, "script": script}, headers=sent
        )


def test_replay_after_end_is_refused_on_every_replica_and_mints_nothing(
    stack: StackInfo, admin_conn: Callable[..., psycopg.Connection]
) -> None:
    with extra_gateway(stack, "running") as running:
        step = StepClient(stack, new_step())
        try:
            assert step.exec("SELECT 1").status_code == 200
            sent = step.headers()
            with httpx.Client(base_url=running, trust_env=False) as http:
                # The running replica has seen (and cached) the live token before the end.
                seen = http.get("/api/sessions", headers=sent)
                assert seen.status_code == 200
            assert step.end().status_code == 200
            before = _roles(admin_conn)
            # The gateway that ended the step, and a replica that was running meanwhile.
            for url in (stack.gateway_url, running):
                refused = _replay(url, sent)
                assert refused.status_code == 401, refused.text
                assert "has ended" in refused.json()["message"]
                reads = httpx.get(
                    f"{url}/api/sessions",
                    headers=sent,
                    trust_env=False,
                )
                assert reads.status_code == 401
            # A replica started after the end (or the gateway restarted): it never heard it.
            with extra_gateway(stack, "later") as later:
                refused = _replay(later, sent)
                assert refused.status_code == 401, refused.text
            assert _roles(admin_conn) - before == set()  # no database user minted
            assert _refusals(stack, step, "step ended") >= 5
        finally:
            step.close()


def test_replay_after_the_task_revoked_its_vault_token_and_ended(
    stack: StackInfo, admin_conn: Callable[..., psycopg.Connection]
) -> None:
    """The task's end: steps/end and the Vault revoke side by side (task/step_session.py)."""
    step = StepClient(stack, new_step())
    assert step.exec("SELECT 1").status_code == 200
    sent = step.headers()
    step.close()  # steps/end, then the step's Vault token revoked
    before = _roles(admin_conn)
    assert _replay(stack.gateway_url, sent).status_code == 401
    assert _roles(admin_conn) - before == set()


def test_a_step_held_by_one_replica_gets_409_on_another(
    stack: StackInfo, admin_conn: Callable[..., psycopg.Connection]
) -> None:
    with extra_gateway(stack, "second") as second:
        step = StepClient(stack, new_step())
        try:
            assert step.exec("CREATE TEMP TABLE t409 (n int)").status_code == 200
            before = _roles(admin_conn)
            sent = step.headers()
            answer = _replay(second, sent, "INSERT INTO t409 VALUES (1)")
            assert answer.status_code == 409, answer.text
            owner = answer.headers["X-Hoop-Step-Owner"]
            assert owner in answer.json()["message"]
            assert answer.headers.get("connection") == "close"
            assert _roles(admin_conn) - before == set()
            assert _refusals(stack, step, "step held by gateway process") == 1
            # The owner still runs the step; its temp table is there.
            again = step.exec("INSERT INTO t409 VALUES (2)")
            assert again.status_code == 200, again.text
            # Ending the step on the other replica ends it everywhere.
            with httpx.Client(base_url=second, trust_env=False) as http:
                ended = http.post("/api/airflow-hoop/steps/end", headers=sent)
            assert ended.status_code == 200, ended.text
            assert step.exec("SELECT 1").status_code == 401
        finally:
            step.close()


def test_a_fenced_owner_hands_the_step_over(stack: StackInfo) -> None:
    """The owner stopped (or was declared dead by the sweep): another process takes the step."""
    step = StepClient(stack, new_step())
    try:
        with extra_gateway(stack, "first") as first:
            sent = step.headers()
            assert _replay(first, sent).status_code == 200
        # ``first`` stopped (stopped_at set): the stack's gateway may now claim the step.
        answer: Any = _replay(stack.gateway_url, sent)
        assert answer.status_code == 200, answer.text
    finally:
        step.close()


def test_identity_tokens_longer_than_the_bound_are_refused(stack: StackInfo, bao_root: Any) -> None:
    """Revoking a step's Vault token does not unsign its identity tokens, and the gateway is
    not told of a revocation without steps/end: the token's lifetime bounds the gap, and the
    gateway refuses tokens that would live longer (vault.max_identity_token_seconds)."""
    path = f"identity/oidc/role/{stack.trusted_workers_vault()['identity_role']}"
    role = bao_root.read(path)["data"]
    bao_root.write(path, **{**role, "ttl": "2h"})
    try:
        step = StepClient(stack, new_step())
        try:
            refused = step.exec("SELECT 1")
            assert refused.status_code == 401, refused.text
            assert "longer than the gateway accepts" in refused.json()["message"]
        finally:
            step.vault.revoke()
            step.http.close()
    finally:
        bao_root.write(path, **role)
    # The role as it was: steps get 5-minute tokens again, and run.
    step = StepClient(stack, new_step())
    try:
        assert step.exec("SELECT 1").status_code == 200
    finally:
        step.close()


def test_a_task_resumed_after_a_deferral_logs_in_again_and_runs(stack: StackInfo) -> None:
    """A deferred task's process ends its step at exit; it resumes with the same try (same
    step key) and a new Vault login: tokens issued after the end run, the old one is refused."""
    ref = new_step()
    first = StepClient(stack, ref)
    assert first.exec("SELECT 1").status_code == 200
    old = first.headers()
    first.close()  # the process exits at the deferral: steps/end and the Vault revoke
    time.sleep(1.1)  # iat has a one-second grain: a token of the end's second is refused
    resumed = StepClient(stack, ref)
    try:
        answer = resumed.exec("SELECT 2")
        assert answer.status_code == 200, answer.text
        assert _replay(stack.gateway_url, old).status_code == 401
        with extra_gateway(stack, "resumed") as other:  # a replica that reads the table
            assert _replay(other, old).status_code == 401
    finally:
        resumed.close()


def test_a_vault_token_revoked_out_of_band_kills_the_steps_requests(
    stack: StackInfo, admin_conn: Callable[..., psycopg.Connection], bao_root: Any
) -> None:
    """No steps/end: an operator revokes the step's Vault token (``vault token revoke``, or a
    task killed before its end). Within ``vault.token_recheck_seconds`` (1 s here) every request
    with the step's identity token is refused, on every replica, recorded, and nothing is
    minted: the token the request names by its accessor no longer exists."""
    step = StepClient(stack, new_step())
    try:
        ran = step.exec("SELECT session_user")
        assert ran.status_code == 200, ran.text
        user = ran.json()["airflow_hoop"]["rows"][0][0]
        sent = step.headers()
        bao_root.auth.token.revoke_accessor(sent[VAULT_ACCESSOR_HEADER])
        time.sleep(1.2)  # the gateway trusts Vault's last answer for token_recheck_seconds
        before = _roles(admin_conn)
        refused = _replay(stack.gateway_url, sent)
        assert refused.status_code == 401, refused.text
        assert "revoked or expired" in refused.json()["message"]
        # What the gateway held for the step goes at once: its user revoked and recorded.
        deadline = time.monotonic() + 10
        while user in _roles(admin_conn) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert user not in _roles(admin_conn)
        assert _revoked_for(stack, user) == ["token-revoked"]
        with extra_gateway(stack, "revoked") as other:  # never saw the step: asks Vault at once
            assert _replay(other, sent).status_code == 401
        assert _roles(admin_conn) - before == set()
        assert _refusals(stack, step, "revoked or expired") >= 2
    finally:
        step.http.close()


def test_a_step_revoked_before_its_first_statement_gets_no_user(
    stack: StackInfo, admin_conn: Callable[..., psycopg.Connection], bao_root: Any
) -> None:
    fresh = StepClient(stack, new_step())
    try:
        sent = fresh.headers()  # logged in, identity token fetched, nothing sent yet
        bao_root.auth.token.revoke_accessor(sent[VAULT_ACCESSOR_HEADER])
        before = _roles(admin_conn)
        refused = _replay(stack.gateway_url, sent)
        assert refused.status_code == 401, refused.text
        assert _roles(admin_conn) - before == set()
    finally:
        fresh.http.close()


def test_the_vault_token_a_request_names_must_be_its_steps_own(
    stack: StackInfo, admin_conn: Callable[..., psycopg.Connection]
) -> None:
    """A kept identity token cannot borrow the accessor of another live login (another step's,
    or none at all): the accessor's token must be the identity token's entity, the same step."""
    victim, other = StepClient(stack, new_step()), StepClient(stack, new_step())
    try:
        before = _roles(admin_conn)
        borrowed = {
            **victim.headers(),
            VAULT_ACCESSOR_HEADER: other.headers()[VAULT_ACCESSOR_HEADER],
        }
        refused = _replay(stack.gateway_url, borrowed)
        assert refused.status_code == 401, refused.text
        assert "is not step" in refused.json()["message"]
        bare = {"Authorization": victim.headers()["Authorization"]}
        missing = _replay(stack.gateway_url, bare)
        assert missing.status_code == 401, missing.text
        assert VAULT_ACCESSOR_HEADER in missing.json()["message"]
        assert _roles(admin_conn) - before == set()
        assert victim.exec("SELECT 1").status_code == 200  # its own accessor: runs
    finally:
        victim.close()
        other.close()
