"""The spine end to end with real Airflow (`airflow dags test`), gateway, OpenBao and Postgres."""

from __future__ import annotations

import json
from pathlib import Path

import hvac
import psycopg
import pytest
import requests

from airflow_hoop.cli.demo import read_ledger
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.records import CredentialRevoked, LedgerRecord, PolicyRefused
from airflow_hoop.ledger.steps import StepView, steps_from_records
from airflow_hoop.ledger.verify import verify_chain

pytestmark = pytest.mark.airflow


def _steps(stack: StackInfo, dag_id: str, run_id: str) -> dict[str, StepView]:
    records = [LedgerRecord.model_validate_json(r.body) for r in read_ledger(stack)]
    return {
        v.step.task_id: v
        for v in steps_from_records(records)
        if v.step.dag_id == dag_id and v.step.run_id == run_id
    }


def _records(stack: StackInfo) -> list[LedgerRecord]:
    return [LedgerRecord.model_validate_json(r.body) for r in read_ledger(stack)]


@pytest.fixture(scope="module")
def etl_run(airflow_home, stack):
    proc = airflow_home.dags_test("governed_etl")
    run_id = airflow_home.latest_run("governed_etl")
    return proc, run_id


def test_governed_etl_succeeds_and_each_task_has_its_own_user(etl_run, airflow_home, stack):
    proc, run_id = etl_run
    states = airflow_home.task_states("governed_etl", run_id)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert set(states.values()) == {"success"}, states

    steps = _steps(stack, "governed_etl", run_id)
    assert set(steps) == {"create_tables", "load_orders", "transform", "read_back", "summarize"}
    users_by_task = {task: set(view.db_users) for task, view in steps.items()}
    all_users = [u for users in users_by_task.values() for u in users]
    assert len(all_users) == len(set(all_users)), "two tasks shared a database user"
    for task, view in steps.items():
        assert view.statements, f"{task} ran no statement through the gateway"
        assert {s.db_user for s in view.statements} <= users_by_task[task]
        assert all(s.status == "success" for s in view.statements), view.statements
        # The user name lets a DBA tell the task: it carries the dag and task ids.
        assert all("governed" in u and task.split("_")[0] in u for u in users_by_task[task])
        assert view.revoke_reason == "step-end", f"{task}: {view.revoke_reason}"


def test_dynamic_users_are_gone_after_the_run(etl_run, stack):
    _, run_id = etl_run
    users = [u for v in _steps(stack, "governed_etl", run_id).values() for u in v.db_users]
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db)) as conn:
        left = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (users,)
        ).fetchall()
    assert users and left == []


def test_step_vault_tokens_are_revoked(etl_run, stack):
    session = requests.Session()
    session.trust_env = False
    root = hvac.Client(url=stack.bao_addr, token=stack.bao_root_token, session=session)
    accessors = root.list("auth/token/accessors")["data"]["keys"]
    live = []
    for accessor in accessors:
        meta = root.lookup_token(accessor, accessor=True)["data"].get("meta") or {}
        if meta.get("dag_id") == "governed_etl":
            live.append(meta.get("task_id"))
    assert live == [], f"step tokens still valid for tasks {live}"


def test_stock_operator_and_hook_route_through_the_gateway(etl_run, airflow_home, stack):
    _, run_id = etl_run
    steps = _steps(stack, "governed_etl", run_id)
    # SQLExecuteQueryOperator on a hoop_postgres connection: two statements (+ COMMIT).
    scripts = [s.script for s in steps["transform"].statements]
    assert any("INSERT INTO daily_revenue" in s for s in scripts)
    xcoms = airflow_home.xcoms("governed_etl", run_id)
    assert xcoms["summarize"] == {"customers": 4.0, "top_is_initech": 1.0}
    # Rows come back typed: dates and numerics survive the gateway.
    assert len(xcoms["read_back"]) == 2


def test_ledger_verifies_after_the_run(etl_run, stack):
    report = verify_chain(read_ledger(stack))
    assert report.ok, report.summary()


#: dag_parity's FAILING: both tasks of these cases fail (a 2 s sleep under a 500 ms timeout).
_PARITY_FAILING = ("options_timeout_fails",)


def test_xcom_parity_with_the_stock_operator(airflow_home, stack):
    proc = airflow_home.dags_test("test_parity")
    run_id = airflow_home.latest_run("test_parity")
    states = airflow_home.task_states("test_parity", run_id)
    # The stock and governed tasks of a failing case fail alike (statement_timeout).
    failing = {f"{side}_{case}" for case in _PARITY_FAILING for side in ("direct", "hoop")}
    assert {t: s for t, s in states.items() if t in failing} == dict.fromkeys(failing, "failed")
    assert {s for t, s in states.items() if t not in failing} == {"success"}, (
        states,
        proc.stdout[-3000:],
    )
    logs = airflow_home.task_logs("test_parity")
    assert logs.count("canceling statement due to statement timeout") >= len(failing), logs[-3000:]
    xcoms = airflow_home.xcoms("test_parity", run_id)
    direct = {k.removeprefix("direct_"): v for k, v in xcoms.items() if k.startswith("direct_")}
    hoop = {k.removeprefix("hoop_"): v for k, v in xcoms.items() if k.startswith("hoop_")}
    assert direct.keys() == hoop.keys() and len(direct) >= 8
    for case, value in direct.items():
        assert hoop[case] == value, f"{case}: stock {value!r} != governed {hoop[case]!r}"
    governed = _steps(stack, "test_parity", run_id)
    # Every governed task went through the gateway (no_rows has no XCom, but has statements).
    assert {t for t in governed if t.startswith("hoop_")} == {
        t for t in states if t.startswith("hoop_")
    }
    assert not any(t.startswith("direct_") for t in governed)


def test_each_broken_link_fails_closed_and_is_named(airflow_home, stack):
    airflow_home.dags_test("test_fail_closed")
    run_id = airflow_home.latest_run("test_fail_closed")
    states = airflow_home.task_states("test_fail_closed", run_id)
    assert states["still_fine"] == "success"
    assert {
        states[t] for t in ("gateway_down", "vault_down", "unknown_target", "refused_option")
    } == {"failed"}, states
    logs = airflow_home.task_logs("test_fail_closed")
    assert "option 'default_transaction_read_only' is refused" in logs
    assert "[gateway] cannot reach the gateway at http://127.0.0.1:9" in logs
    assert "[vault] cannot reach Vault at http://127.0.0.1:9" in logs
    assert "connection no_such_target not found" in logs


def test_policy_refusal_fails_the_task_and_is_recorded(airflow_home, stack):
    airflow_home.dags_test("forbidden_etl")
    run_id = airflow_home.latest_run("forbidden_etl")
    assert airflow_home.task_states("forbidden_etl", run_id) == {"sneak": "failed"}
    assert "[gateway policy]" in airflow_home.task_logs("forbidden_etl")
    refusals = [
        r
        for r in _records(stack)
        if isinstance(r.body, PolicyRefused) and r.step and r.step.dag_id == "forbidden_etl"
    ]
    assert refusals and refusals[-1].body.connection == "warehouse"
    # Nothing was issued to the refused step.
    assert not any(
        isinstance(r.body, CredentialRevoked) and r.step and r.step.dag_id == "forbidden_etl"
        for r in _records(stack)
    )


def _issued_passwords(stack: StackInfo) -> list[str]:
    """Every database password Vault handed out, from its raw audit log (test stacks only)."""
    passwords = []
    assert stack.bao_audit_log
    for line in Path(stack.bao_audit_log).read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        path = entry.get("request", {}).get("path", "")
        data = (entry.get("response") or {}).get("data") or {}
        if (
            entry.get("type") == "response"
            and path.startswith("database/creds/")
            and "password" in data
        ):
            passwords.append(data["password"])
    return passwords


def test_no_task_ever_saw_a_database_password(etl_run, airflow_home, stack):
    proc, run_id = etl_run
    passwords = _issued_passwords(stack)
    assert len(passwords) >= 5  # one per task of the run, at least
    haystacks = {
        "task logs": airflow_home.task_logs("governed_etl"),
        "xcom": airflow_home.xcom_text("governed_etl", run_id),
        "airflow output": proc.stdout + proc.stderr,
        "airflow metadata db": airflow_home.db_path.read_bytes().decode("latin-1"),
        "gateway log": Path(stack.gateway_log).read_text(encoding="utf-8", errors="replace"),
        "ledger": "\n".join(r.body for r in read_ledger(stack)),
    }
    for where, text in haystacks.items():
        leaked = [p for p in passwords if p in text]
        assert not leaked, f"a database password reached the {where}"
    # The search itself works: the passwords are real strings a grep would find.
    assert all(len(p) >= 16 for p in passwords)
