"""Session settings (the hook's libpq ``options``) on a real gateway, Postgres and OpenBao.

The hostile author posts the JSON directly (no hook to refuse anything first): the gateway's
closed model, the connection's policy and PostgreSQL's own parser must hold on their own, and
the read-only transaction of an unapproved command must survive whatever is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.gateway_support import (
    CONNECTION,
    StepClient,
    extra_gateway,
    ledger_records,
    new_step,
    step_client,
)

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.correlation import application_name
from airflow_hoop.ledger.records import PolicyRefused, SessionIntent, SessionResult

#: Unapproved commands of this DAG run read-only (the devstack's ``sensitive-writes`` rule).
READ_ONLY_DAG = "test_approval_settings"


def _exec(
    client: StepClient, script: str, settings: dict[str, Any], connection: str = CONNECTION
) -> httpx.Response:
    body = {
        "connection": connection,
        "script": script,
        "airflow_hoop": {"session_settings": settings},
    }
    return client.http.post("/api/sessions", json=body, headers=client.headers())


def _result(stack: StackInfo, session_id: str) -> tuple[SessionIntent, SessionResult]:
    bodies = [r.body for r in ledger_records(stack)]
    intent = next(b for b in bodies if isinstance(b, SessionIntent) and b.session_id == session_id)
    result = next(b for b in bodies if isinstance(b, SessionResult) and b.session_id == session_id)
    return intent, result


def _value(response: httpx.Response) -> Any:
    body = response.json()
    assert body["output_status"] == "success", body
    return body["airflow_hoop"]["rows"][0][0]


@pytest.fixture(scope="module")
def search_path_gateway(stack: StackInfo) -> Iterator[str]:
    """A gateway whose warehouse connection also allows search_path."""
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    connections = settings["connections"]
    for conn in connections:
        if conn["name"] == CONNECTION:
            conn["session_settings"] = ["statement_timeout", "search_path"]
    with extra_gateway(stack, "search-path", connections=connections) as url:
        yield url


#: Seconds of work that every label calls a read (pg_sleep "may write": it needs an approval
#: under the read-only DAG's rule).
_LONG_READ = "SELECT count(*) FROM generate_series(1, 300000000)"


@pytest.mark.parametrize(
    ("dag", "script"), [("test_gateway", "SELECT pg_sleep(2)"), (READ_ONLY_DAG, _LONG_READ)]
)
def test_a_sleep_past_statement_timeout_fails_as_it_does_stock(
    stack: StackInfo, dag: str, script: str
) -> None:
    with step_client(stack, new_step(dag)) as client:
        response = _exec(client, script, {"statement_timeout": "500ms"})
        body = response.json()
        assert body["output_status"] == "failed", body
        assert "canceling statement due to statement timeout" in body["output"]
        intent, result = _result(stack, body["session_id"])
        assert intent.session_settings == {"statement_timeout": "500ms"}
        assert result.sqlstate == "57014" and result.duration_ms < 1900
        # The next exec without options has the session's default again, as a new stock
        # connection of a hook without options would.
        assert _value(_exec(client, "SHOW statement_timeout", {})) == "0"


def test_settings_reach_the_session_and_the_step_keeps_its_name(stack: StackInfo) -> None:
    step = new_step()
    settings = {
        "lock_timeout": "1500ms",
        "idle_in_transaction_session_timeout": "60s",
        "application_name": "nightly-etl",
    }
    with step_client(stack, step) as client:
        script = (
            "SELECT current_setting('lock_timeout') || '|' || "
            "current_setting('idle_in_transaction_session_timeout') || '|' || "
            "current_setting('application_name')"
        )
        value = _value(_exec(client, script, settings))
    lock, idle, name = value.split("|")
    assert (lock, idle) == ("1500ms", "1min")
    assert name == application_name(step.key, prefix="nightly-etl")
    assert name.startswith("nightly-etl hoop:")


@pytest.mark.parametrize(
    "value",
    [
        "1s; SET ROLE postgres",
        "0'); SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false); --",
        "1000$$",
    ],
)
def test_an_injected_value_is_a_value_and_postgres_refuses_it(stack: StackInfo, value: str) -> None:
    with step_client(stack, new_step()) as client:
        body = _exec(client, "SELECT current_user", {"statement_timeout": value}).json()
        assert body["output_status"] == "failed"
        assert 'invalid value for parameter "statement_timeout"' in body["output"]
        # Nothing ran as anyone else, and the step's session still works as its own user.
        who = (
            "SELECT session_user::text || '|' || (SELECT r.rolsuper FROM pg_catalog.pg_roles r "
            "WHERE r.rolname = current_user)::text"
        )
        response = _exec(client, who, {})
        intent, _ = _result(stack, response.json()["session_id"])
        assert _value(response) == f"{intent.db_user}|false"
        assert _value(_exec(client, "SHOW statement_timeout", {})) == "0"


@pytest.mark.parametrize(
    "name", ["role", "session_authorization", "default_transaction_read_only", "work_mem"]
)
def test_a_setting_outside_the_closed_set_is_refused_before_anything(
    stack: StackInfo, name: str
) -> None:
    with step_client(stack, new_step(READ_ONLY_DAG)) as client:
        response = _exec(client, "SELECT 1", {name: "off" if "read_only" in name else "postgres"})
        assert response.status_code == 400
        assert "session_settings" in response.text and name in response.text


def test_read_only_enforcement_survives_the_settings(stack: StackInfo) -> None:
    with step_client(stack, new_step(READ_ONLY_DAG)) as client:
        settings = {"statement_timeout": "5s", "application_name": "etl"}
        read_only = _value(_exec(client, "SHOW transaction_read_only", settings))
        response = _exec(client, "SELECT session_user::text", settings)
        user = _value(response)
        intent, _ = _result(stack, response.json()["session_id"])
    # Still the gateway's read-only transaction, as the step's READ user.
    assert read_only == "on" and intent.read_only is True and user == intent.db_user


def test_search_path_only_where_the_policy_allows(
    stack: StackInfo, search_path_gateway: str
) -> None:
    with step_client(stack, new_step()) as client:
        response = _exec(client, "SHOW search_path", {"search_path": "pg_catalog, public"})
        assert response.status_code == 403
        assert "does not allow the session setting search_path" in response.text
    refusals = [
        r.body
        for r in ledger_records(stack)
        if isinstance(r.body, PolicyRefused) and r.step and r.step.key == client.step.key
    ]
    assert refusals and "search_path" in refusals[-1].reason
    with step_client(stack, new_step(), search_path_gateway) as client:
        value = _value(_exec(client, "SHOW search_path", {"search_path": "pg_catalog, public"}))
        assert value == "pg_catalog, public"
        body = _exec(client, "SHOW search_path", {"search_path": "public; DROP TABLE x"}).json()
        assert 'invalid value for parameter "search_path"' in body["output"]
    # Where an approval rule covers the DAG, an approved command's names must resolve as the
    # approver read them: the approval does not bind search_path, so it is refused.
    with step_client(stack, new_step(READ_ONLY_DAG), search_path_gateway) as client:
        response = _exec(client, "SHOW search_path", {"search_path": "pg_catalog, public"})
        assert response.status_code == 403
        assert "approval rule sensitive-writes covers it" in response.text
        assert _value(_exec(client, "SHOW search_path", {"statement_timeout": "5s"})) != ""


def test_a_shell_connection_refuses_session_settings(stack: StackInfo) -> None:
    with step_client(stack, new_step()) as client:
        response = _exec(client, "echo hi", {"statement_timeout": "1s"}, connection="ops_shell")
        assert response.status_code == 403
        assert "session settings" in response.text
