"""The gateway's session API against the real stack: Postgres, OpenBao and gateway processes.

No mocks. Step identity tokens come from Vault through the task-side broker (airflow_hoop.task.vault).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import hvac
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ed25519
from support.gateway_support import (
    CONNECTION,
    StepClient,
    auditor,
    extra_gateway,
    ledger_count,
    ledger_records,
    new_step,
    session_records,
    step_client,
    wait_done,
)

from airflow_hoop.devstack import vault_setup
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.records import (
    CredentialIssued,
    CredentialRevoked,
    PolicyRefused,
    SessionIntent,
    SessionResult,
)
from airflow_hoop.wire.sessions import ExecResponse, SessionInfo, SessionList, StepEndResponse
from airflow_hoop.wire.values import decode_value, encode_parameters


@pytest.fixture(scope="module")
def fast_gateway(stack: StackInfo) -> Iterator[str]:
    """A second gateway process: 1 s sync window and no leeway on token expiry."""
    with extra_gateway(stack, "fast", sync_timeout_seconds=1, token_leeway_seconds=0) as url:
        yield url


@pytest.fixture
def table(stack: StackInfo, admin_conn: Any) -> str:
    """A fresh warehouse table the steps may use (owned by the steps' group role)."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    conn = admin_conn()
    conn.execute(
        f"CREATE TABLE {name} (id serial PRIMARY KEY, n int, amount numeric, day date, "
        f"note text, raw bytea)"
    )
    conn.execute(f"ALTER TABLE {name} OWNER TO warehouse_writer")
    return name


def _ok(response: Any) -> ExecResponse:
    assert response.status_code == 200, response.text
    result = ExecResponse.model_validate(response.json())
    assert result.output_status == "success", result.output
    assert result.exit_code == 0
    return result


def _rows(result: ExecResponse) -> list[list[Any]]:
    assert result.airflow_hoop is not None
    return [[decode_value(v) for v in row] for row in result.airflow_hoop.rows]


def _table_names(admin_conn: Any) -> set[str]:
    rows = admin_conn().execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r[0] for r in rows.fetchall()}


def _pg_role_exists(admin_conn: Any, name: str) -> bool:
    row = admin_conn().execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    return row is not None


# -- the governed path -------------------------------------------------------------------------
def test_healthz(stack: StackInfo) -> None:
    with auditor(stack) as client:
        assert client.get("/api/healthz").json() == {"liveness": "OK"}


def test_insert_and_select_with_parameters_return_typed_rows_and_records(
    stack: StackInfo, step: StepClient, table: str
) -> None:
    values = [7, Decimal("12.3400"), dt.date(2026, 11, 23), 'it\'s "quoted"', b"\x00\xff"]
    inserted = _ok(
        step.exec(
            f"INSERT INTO {table} (n, amount, day, note, raw) VALUES (%s, %s, %s, %s, %s), "
            f"(%s, %s, %s, %s, %s)",
            encode_parameters(values + values),
            autocommit=True,
        )
    )
    assert inserted.airflow_hoop is not None
    assert inserted.airflow_hoop.rowcount == 2
    assert inserted.airflow_hoop.status_message == "INSERT 0 2"
    assert inserted.output == "INSERT 0 2\n"

    selected = _ok(
        step.exec(
            f"SELECT n, amount, day, note, raw FROM {table} WHERE n = %(n)s ORDER BY id",
            encode_parameters({"n": 7}),
        )
    )
    typed = selected.airflow_hoop
    assert typed is not None
    assert [c.name for c in typed.columns or []] == ["n", "amount", "day", "note", "raw"]
    assert [c.type_name for c in typed.columns or []] == [
        "int4",
        "numeric",
        "date",
        "text",
        "bytea",
    ]
    assert _rows(selected) == [values, values]
    assert typed.rowcount == 2
    assert selected.output.splitlines()[0] == "n\tamount\tday\tnote\traw"
    assert selected.output.endswith("(2 rows)\n")
    assert typed.db_user and typed.db_user.startswith("af_test-gateway-task")

    # Each exec left an intent before and a result after, linked by the session id.
    for result, count in ((inserted, 10), (selected, 1)):
        records = session_records(stack, result.session_id)
        assert [type(r.body) for r in records] == [SessionIntent, SessionResult]
        intent, outcome = records[0].body, records[1].body
        assert isinstance(intent, SessionIntent) and isinstance(outcome, SessionResult)
        assert intent.parameter_count == count and intent.parameters_sha256
        assert intent.db_user == typed.db_user
        assert records[0].step == step.step
        assert outcome.status == "success" and outcome.exit_code == 0
        assert result.airflow_hoop is not None
        assert result.airflow_hoop.intent_seq == records[0].seq
        assert result.airflow_hoop.result_seq == records[1].seq
    assert session_records(stack, selected.session_id)[0].body.script.startswith("SELECT n,")  # type: ignore[union-attr]
    assert session_records(stack, selected.session_id)[1].body.rows_returned == 2  # type: ignore[union-attr]


def test_transaction_spans_execs_until_commit(
    stack: StackInfo, step: StepClient, table: str, admin_conn: Any
) -> None:
    _ok(step.exec(f"INSERT INTO {table} (n) VALUES (1)"))
    count = f"SELECT count(*) FROM {table}"
    assert admin_conn().execute(count).fetchone()[0] == 0  # not committed yet
    assert _ok(step.exec("COMMIT")).output == "COMMIT\n"
    assert admin_conn().execute(count).fetchone()[0] == 1
    # A failure after earlier work leaves the transaction aborted: COMMIT must not half-commit.
    _ok(step.exec(f"INSERT INTO {table} (n) VALUES (2)"))
    failed = ExecResponse.model_validate(step.exec("SELECT 1/0").json())
    assert failed.output_status == "failed" and "division by zero" in failed.output
    commit = ExecResponse.model_validate(step.exec("COMMIT").json())
    assert commit.output_status == "failed" and "nothing was committed" in commit.output
    assert admin_conn().execute(count).fetchone()[0] == 1
    _ok(step.exec(count))  # the step's connection is usable again


def test_multi_statement_script_without_parameters_keeps_percent_literal(step: StepClient) -> None:
    result = _ok(step.exec("SELECT 1; SELECT '100%' AS pct"))
    assert _rows(result) == [["100%"]]
    assert result.output == "?column?\n1\n(1 row)\npct\n100%\n(1 row)\n"


def test_two_steps_get_two_database_users(stack: StackInfo) -> None:
    users = []
    for task in ("extract", "load"):
        with step_client(stack, new_step(task_id=task)) as client:
            result = _ok(client.exec("SELECT session_user, current_user"))
            session_user, current_user = _rows(result)[0]
            assert session_user.startswith(f"af_test-gateway-{task}-manual--")
            assert current_user == "warehouse_writer"
            users.append(session_user)
    assert users[0] != users[1]


def test_steps_end_revokes_the_database_user(
    stack: StackInfo, step: StepClient, admin_conn: Any
) -> None:
    user = _rows(_ok(step.exec("SELECT session_user")))[0][0]
    assert _pg_role_exists(admin_conn, user)
    response = step.end()
    assert response.status_code == 200, response.text
    ended = StepEndResponse.model_validate(response.json())
    assert ended.step == step.step.key and ended.revoked_db_users == [user]
    assert not _pg_role_exists(admin_conn, user)  # lease revoke is synchronous
    records = [r for r in ledger_records(stack) if r.step == step.step]
    issued = [r.body for r in records if isinstance(r.body, CredentialIssued)]
    revoked = [r.body for r in records if isinstance(r.body, CredentialRevoked)]
    assert [i.db_user for i in issued] == [user]
    assert [(r.db_user, r.reason, r.lease_id) for r in revoked] == [
        (user, "step-end", issued[0].lease_id)
    ]
    # The step's token died with it (test_step_registry.py): ending again or a later
    # statement is refused, and no new user is minted.
    assert step.end().status_code == 401
    assert step.exec("SELECT session_user").status_code == 401
    assert not _pg_role_exists(admin_conn, user)


# -- bad input ---------------------------------------------------------------------------------
def _exec_body(**fields: Any) -> bytes:
    return json.dumps({"connection": CONNECTION, "script": "SELECT 1", **fields}).encode()


BAD_REQUESTS = {
    "malformed JSON": (b'{"connection": "warehouse", "script": ', 400),
    "not an object": (b"[1, 2]", 400),
    "missing script": (b'{"connection": "warehouse"}', 400),
    "script not a string": (_exec_body(script=["SELECT 1"]), 400),
    "unknown connection": (_exec_body(connection="nope"), 400),  # hoop's status and text
    "empty script": (_exec_body(script=""), 422),
    "whitespace script": (_exec_body(script=" \n\t "), 422),
    "10 MB script": (_exec_body(script="SELECT 1;" + " " * 10_000_000), 413),
    "script over max_script_bytes": (_exec_body(script="--" + "x" * 1_048_576), 413),
    "invalid UTF-8": (b'{"connection": "warehouse", "script": "SELECT \xff\xfe"}', 400),
    "NUL in script": (_exec_body(script="SELECT 1\u0000"), 400),
    "lone surrogate": (b'{"connection": "warehouse", "script": "SELECT \'\\ud800\'"}', 400),
    "unknown typed parameter": (
        _exec_body(script="SELECT %s", airflow_hoop={"parameters": [{"$t": "evil", "v": 1}]}),
        400,
    ),
    "bad extension field": (_exec_body(airflow_hoop={"autocommit": True, "shell": "rm"}), 400),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_refused_before_anything_is_recorded(
    stack: StackInfo, step: StepClient, case: str
) -> None:
    body, status = BAD_REQUESTS[case]
    before = ledger_count(stack)
    response = step.post_raw(body)
    assert response.status_code == status, response.text
    message = response.json()["message"]
    assert isinstance(message, str) and message
    assert len(message) < 500  # never echoes the input back
    if case == "unknown connection":
        assert message == "connection nope not found"
    assert ledger_count(stack) == before


def test_unknown_routes_and_methods_answer_in_hoops_shape(stack: StackInfo) -> None:
    with auditor(stack) as client:
        assert client.get("/api/nope").json() == {"message": "Not Found"}
        response = client.delete("/api/airflow-hoop/ledger")
        assert response.status_code == 405 and "message" in response.json()
        bad = client.get("/api/airflow-hoop/ledger", params={"limit": "lots"})
        assert bad.status_code == 422 and bad.json()["message"].startswith("[gateway request]")


# -- hostile parameters ------------------------------------------------------------------------
HOSTILE = [
    "'; DROP TABLE pg_class; --",
    "x'); CREATE TABLE pwned_quote (a int); --",
    "$$; CREATE TABLE pwned_dollar (a int); $$",
    "$tag$ CREATE TABLE pwned_tag (a int) $tag$",
    "%s %(n)s %% {0} \\x00 \\'",
    "; COMMIT; CREATE TABLE pwned_commit (a int);",
    "😀 ünïcödé \u202e \t\r\n",
    "A" * 1_000_000,
]


def test_hostile_parameters_are_stored_as_data(
    stack: StackInfo, step: StepClient, table: str, admin_conn: Any
) -> None:
    tables_before = _table_names(admin_conn)
    for value in HOSTILE:
        _ok(step.exec(f"INSERT INTO {table} (note) VALUES (%s)", [value], autocommit=True))
    rows = _rows(_ok(step.exec(f"SELECT note FROM {table} ORDER BY id")))
    assert [r[0] for r in rows] == HOSTILE
    # Named parameters and a hostile value in a WHERE clause match only the equal row.
    hit = _ok(step.exec(f"SELECT count(*) FROM {table} WHERE note = %(v)s", {"v": HOSTILE[1]}))
    assert _rows(hit) == [[1]]
    assert _table_names(admin_conn) == tables_before


def test_nul_in_a_parameter_fails_cleanly(step: StepClient, table: str) -> None:
    response = step.exec(f"INSERT INTO {table} (note) VALUES (%s)", ["a\x00b"], autocommit=True)
    assert response.status_code == 200, response.text
    result = ExecResponse.model_validate(response.json())
    assert result.output_status == "failed" and result.exit_code == 1
    assert "NUL" in result.output
    _ok(step.exec("SELECT 1"))  # the step goes on


# -- policy and identity -----------------------------------------------------------------------
def test_dag_not_allowed_is_refused_and_recorded(stack: StackInfo, admin_conn: Any) -> None:
    with step_client(stack, new_step(dag_id="forbidden_dag")) as client:
        before = ledger_count(stack)
        response = client.exec("SELECT 1")
        assert response.status_code == 403, response.text
        message = response.json()["message"]
        assert message.startswith("[gateway policy] DAG forbidden_dag is not allowed")
        assert "Fix:" in message
        records = [r for r in ledger_records(stack) if r.step == client.step]
    assert ledger_count(stack) == before + 1
    assert len(records) == 1 and isinstance(records[0].body, PolicyRefused)
    assert records[0].body.connection == CONNECTION
    # No credential was minted for the refused step.
    assert not [r for r in records if isinstance(r.body, CredentialIssued)]


@pytest.mark.parametrize("key", ["dag_id", "task_id", "run_id", "try_number"])
def test_token_used_for_another_step_is_refused(
    stack: StackInfo, step: StepClient, key: str
) -> None:
    metadata = {
        "dag_id": step.step.dag_id,
        "task_id": step.step.task_id,
        "run_id": step.step.run_id,
        "try_number": str(step.step.try_number),
    }
    metadata[key] = "test_other_dag" if key != "try_number" else "2"
    response = step.exec("SELECT 1", metadata=metadata)
    assert response.status_code == 403, response.text
    assert f"request metadata {key} does not match" in response.json()["message"]
    refusals = [r.body for r in ledger_records(stack) if r.step == step.step]
    assert len(refusals) == 1 and isinstance(refusals[0], PolicyRefused)
    # Matching metadata is fine.
    metadata[key] = getattr(step.step, key) if key != "try_number" else "1"
    _ok(step.exec("SELECT 1", metadata=metadata))


def _forged(issuer: str, kid: str, *, exp_delta: int) -> str:
    """A JWT with the right issuer/audience/claims, signed by a throwaway Ed25519 key."""
    now = int(time.time())
    payload = {
        "iss": issuer,
        "aud": vault_setup.IDENTITY_AUDIENCE,
        "iat": now - 600,
        "exp": now + exp_delta,
        "dag_id": "test_gateway",
        "task_id": "t",
        "run_id": "r",
        "try_number": "1",
    }
    key = ed25519.Ed25519PrivateKey.generate()
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": kid})


def _real_kid(step: StepClient) -> str:
    return str(jwt.get_unverified_header(step.token())["kid"])


def test_forged_and_malformed_tokens_are_401(stack: StackInfo, step: StepClient) -> None:
    """Crafted tokens: a throwaway key (expired and not), Vault's kid with a foreign key,
    alg=none, HS256 with the public key as secret, garbage, an unknown API key, no header."""
    kid = _real_kid(step)
    issuer = f"{stack.bao_addr}/v1/identity/oidc"
    none_token = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": kid}).encode())
        .decode()
        .rstrip("=")
        + "."
        + base64.urlsafe_b64encode(b'{"dag_id":"x"}').decode().rstrip("=")
        + "."
    )
    hs = jwt.encode({"dag_id": "x"}, "s" * 32, algorithm="HS256", headers={"kid": kid})
    cases = {
        "throwaway key, expired": (_forged(issuer, "throwaway", exp_delta=-3600), "not publish"),
        "throwaway key, valid": (_forged(issuer, "throwaway", exp_delta=600), "not publish"),
        "vault kid, foreign key": (_forged(issuer, kid, exp_delta=600), "rejected"),
        "alg none": (none_token, "rejected"),
        "HS256": (hs, "rejected"),
        "garbage": ("not-a-jwt", "neither an API key nor a JWT"),
        "unknown API key": ("hpk_" + "A" * 43, "unknown API key"),
    }
    for name, (token, expected) in cases.items():
        response = step.http.get("/api/sessions", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (name, response.text)
        message = response.json()["message"]
        assert message.startswith("[gateway auth]") and expected in message, (name, message)
        assert token not in message
    missing = step.http.get("/api/sessions")
    assert missing.status_code == 401 and "no bearer token" in missing.json()["message"]


@pytest.fixture(scope="module")
def short_lived_identity(stack: StackInfo) -> Iterator[str]:
    """A Vault identity-token role whose tokens live 2 s (and a login role that may use it)."""
    root: hvac.Client = vault_setup.vault_client(stack.bao_addr, stack.bao_root_token)
    name = "short-ttl-test"
    mounts = root.sys.list_auth_methods()
    mount = vault_setup.TRUSTED_JWT_MOUNT  # no Airflow here: the trusted-workers mount
    accessor = mounts.get("data", mounts)[f"{mount}/"]["accessor"]
    root.write_data(
        f"identity/oidc/role/{name}",
        data={
            "key": vault_setup.STEP_ROLE,
            "ttl": "2s",
            "client_id": vault_setup.IDENTITY_AUDIENCE,
            "template": base64.b64encode(
                vault_setup.identity_template(
                    accessor, attested_by=vault_setup.TRUSTED_ATTESTED
                ).encode()
            ).decode(),
        },
    )
    root.sys.create_or_update_policy(
        name, f'path "identity/oidc/token/{name}" {{ capabilities = ["read"] }}\n'
    )
    role = root.read(f"auth/{mount}/role/{vault_setup.STEP_ROLE}")["data"]
    root.write_data(
        f"auth/{mount}/role/{name}",
        data={
            "role_type": "jwt",
            "user_claim": role["user_claim"],
            "bound_audiences": role["bound_audiences"],
            "claim_mappings": role["claim_mappings"],
            "token_policies": [name],
            "token_ttl": "5m",
        },
    )
    root.adapter.close()
    yield name


def test_expired_identity_token_is_401(
    stack: StackInfo, fast_gateway: str, short_lived_identity: str
) -> None:
    """A real Vault identity token with a 2 s TTL, sent to the gateway without leeway."""
    role = short_lived_identity
    with step_client(stack, url=fast_gateway, jwt_role=role, identity_role=role) as client:
        token = client.vault.identity_token()
        headers = client.headers()
        assert client.http.get("/api/sessions", headers=headers).status_code == 200
        time.sleep(
            max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"] - time.time())
            + 1.1
        )
        response = client.http.get("/api/sessions", headers=headers)
        assert response.status_code == 401, response.text
        message = response.json()["message"]
        assert message.startswith("[gateway auth] identity token expired") and "Fix:" in message


def test_api_keys_read_but_never_run(stack: StackInfo) -> None:
    with auditor(stack) as client:
        before = ledger_count(stack)
        response = client.post(
            "/api/sessions", json={"connection": CONNECTION, "script": "SELECT 1"}
        )
        assert response.status_code == 403
        assert "may not run commands" in response.json()["message"]
        assert ledger_count(stack) == before + 1  # the refusal is on the record
        assert client.post("/api/airflow-hoop/steps/end").status_code == 403
        assert client.get("/api/sessions", params={"limit": 5}).status_code == 200


def test_steps_may_not_read_the_ledger(step: StepClient) -> None:
    response = step.get("/api/airflow-hoop/ledger")
    assert (
        response.status_code == 403
        and "steps may not read the ledger" in response.json()["message"]
    )


# -- sessions ----------------------------------------------------------------------------------
def test_sessions_are_visible_to_their_step_and_to_api_keys(
    stack: StackInfo, step: StepClient
) -> None:
    correlation = f"corr-{uuid.uuid4().hex}"
    body = {
        "connection": CONNECTION,
        "script": "SELECT 41 + 1 AS answer",
        "correlation_id": correlation,
    }
    result = ExecResponse.model_validate(
        step.http.post("/api/sessions", json=body, headers=step.headers()).json()
    )
    info = SessionInfo.model_validate(step.get(f"/api/sessions/{result.session_id}").json())
    assert info.status == "done" and info.exit_code == 0 and info.output_status == "success"
    assert info.correlation_id == correlation and info.script and info.script.data == body["script"]
    assert info.user == step.step.key
    assert info.airflow_hoop is not None and info.airflow_hoop.rows == [[42]]
    assert info.airflow_hoop.result_seq == result.airflow_hoop.result_seq  # type: ignore[union-attr]
    listed = SessionList.model_validate(
        step.get("/api/sessions", correlation_id=correlation).json()
    )
    assert [s.id for s in listed.data] == [result.session_id] and listed.total == 1

    with step_client(stack) as other:
        denied = other.get(f"/api/sessions/{result.session_id}")
        assert denied.status_code == 403
        assert denied.json() == {"message": "user is not allowed to access this session"}
        assert other.get("/api/sessions", correlation_id=correlation).json()["total"] == 0
        assert other.post(f"/api/sessions/{result.session_id}/kill").status_code == 403
    with auditor(stack) as client:
        assert client.get(f"/api/sessions/{result.session_id}").status_code == 200
        assert (
            client.get("/api/sessions", params={"correlation_id": correlation}).json()["total"] == 1
        )
    assert step.get(f"/api/sessions/{uuid.uuid4()}").json() == {"message": "not found"}
    assert step.get("/api/sessions/not-a-uuid").status_code == 404


def test_statement_longer_than_the_sync_window_answers_202_then_done(
    stack: StackInfo, fast_gateway: str
) -> None:
    with step_client(stack, url=fast_gateway) as client:
        started = time.monotonic()
        response = client.exec("SELECT 42 AS answer FROM pg_sleep(2.5)")
        assert response.status_code == 202, response.text
        assert time.monotonic() - started < 2.4
        body = response.json()
        assert body["exit_code"] == -2 and body["output_status"] == "running"
        assert body["has_review"] is False and body["output"] == ""
        info = SessionInfo.model_validate(wait_done(client, body["session_id"]))
        assert info.exit_code == 0 and info.output_status == "success"
        assert info.airflow_hoop is not None and info.airflow_hoop.rows == [[42]]
        records = session_records(stack, body["session_id"])
        assert [type(r.body) for r in records] == [SessionIntent, SessionResult]
        assert info.airflow_hoop.result_seq == records[1].seq


def test_kill_cancels_the_running_statement_and_is_recorded(
    stack: StackInfo, fast_gateway: str
) -> None:
    with step_client(stack, url=fast_gateway) as client:
        response = client.exec("SELECT pg_sleep(60)")
        assert response.status_code == 202, response.text
        session_id = response.json()["session_id"]
        started = time.monotonic()
        assert client.post(f"/api/sessions/{session_id}/kill").status_code == 204
        info = SessionInfo.model_validate(wait_done(client, session_id, timeout=15))
        assert time.monotonic() - started < 10
        assert info.exit_code == -2 and "killed" in (info.output or "")
        result = session_records(stack, session_id)[-1].body
        assert isinstance(result, SessionResult) and result.status == "killed"
        assert client.post(f"/api/sessions/{session_id}/kill").status_code == 204  # done: no-op
        _ok(client.exec("SELECT 1"))  # the step's connection survived the cancel


# -- releases without steps/end ----------------------------------------------------------------
def test_idle_step_credentials_are_reaped(stack: StackInfo, admin_conn: Any) -> None:
    settings = {"step_idle_seconds": 1, "reaper_interval_seconds": 0.2}
    with extra_gateway(stack, "reaper", **settings) as url, step_client(stack, url=url) as client:
        user = _rows(_ok(client.exec("SELECT session_user")))[0][0]
        deadline = time.monotonic() + 10
        while _pg_role_exists(admin_conn, user):
            assert time.monotonic() < deadline, "idle credential not reaped"
            time.sleep(0.1)
        bodies = [r.body for r in ledger_records(stack) if r.step == client.step]
        revoked = [b for b in bodies if isinstance(b, CredentialRevoked)]
        assert [(b.db_user, b.reason) for b in revoked] == [(user, "expired")]
        assert client.end().json()["revoked_db_users"] == []


def test_gateway_shutdown_interrupts_and_revokes(stack: StackInfo, admin_conn: Any) -> None:
    with step_client(stack) as client:
        with extra_gateway(stack, "shutdown", sync_timeout_seconds=1) as url:
            client.http.base_url = url  # type: ignore[assignment]
            user = _rows(_ok(client.exec("SELECT session_user")))[0][0]
            running = client.exec("SELECT pg_sleep(60)")
            assert running.status_code == 202, running.text
            session_id = running.json()["session_id"]
        # The process is gone (SIGTERM): it recorded the interruption and revoked the user.
        assert not _pg_role_exists(admin_conn, user)
        client.http.base_url = stack.gateway_url  # type: ignore[assignment]
        info = SessionInfo.model_validate(client.get(f"/api/sessions/{session_id}").json())
        assert info.status == "done" and info.exit_code == -2
        assert "interrupted" in (info.output or "")
        records = [r.body for r in ledger_records(stack) if r.step == client.step]
        result = [b for b in records if isinstance(b, SessionResult)][-1]
        assert result.session_id == session_id and result.status == "interrupted"
        revoked = [b for b in records if isinstance(b, CredentialRevoked)]
        assert [(b.db_user, b.reason) for b in revoked] == [(user, "shutdown")]


# -- a failing Vault fails closed --------------------------------------------------------------
def test_vault_failures_answer_503_and_run_nothing(stack: StackInfo) -> None:
    vault = yaml.safe_load(Path(stack.gateway_settings_path).read_text())["vault"]
    bad_token = {**vault, "auth": {"method": "token", "token": "s.not-a-real-token"}}
    with (
        step_client(stack) as client,
        extra_gateway(stack, "bad-vault-token", vault=bad_token) as url,
    ):
        before = ledger_count(stack)
        response = client.http.post(
            f"{url}/api/sessions",
            json={"connection": CONNECTION, "script": "SELECT 1"},
            headers=client.headers(),
        )
        assert response.status_code == 503, response.text
        message = response.json()["message"]
        # Its first Vault call: is the step's own Vault token alive (token_liveness.py)?
        assert message.startswith("[vault] Vault refused looking up a step's Vault token")
        assert "s.not-a-real-token" not in message and "Fix:" in message
        assert ledger_count(stack) == before
    dead = {**vault, "url": "http://127.0.0.1:9"}  # nothing listens on the discard port
    with step_client(stack) as client:
        token = client.token()
        with extra_gateway(stack, "dead-vault", vault=dead) as url:
            response = client.http.get(
                f"{url}/api/sessions", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 503, response.text
            assert response.json()["message"].startswith(
                "[vault] cannot fetch Vault's identity-token keys"
            )
