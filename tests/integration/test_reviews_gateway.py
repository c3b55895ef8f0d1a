"""Reviews and their enforcement at the real gateway process (Postgres, OpenBao, no mocks).

The devstack's warehouse connection has an approval rule: writes of DAGs ``test_approval*``
need one approval from group ``data-owners``. Steps log in to Vault as themselves; decisions
come from the stack's approver keys (the UI plugin's, which names the Airflow user, and a
person's key on the gateway API).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.gateway_support import (
    CONNECTION,
    StepClient,
    auditor,
    extra_gateway,
    ledger_records,
    step_client,
)

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.gateway.settings import ApiKey
from airflow_hoop.ledger.commands import command_sha256, parameters_sha256, statement_sha256
from airflow_hoop.ledger.records import (
    LedgerRecord,
    PolicyRefused,
    ReviewDecided,
    ReviewExecuted,
    ReviewRequested,
    SessionIntent,
    StepRef,
)
from airflow_hoop.wire.reviews import Review, ReviewCreated
from airflow_hoop.wire.values import encode_parameters

DAG = "test_approval_gw"


def _step(run_id: str, task_id: str, try_number: int = 1, triggered_by: str | None = None):
    return StepRef(
        dag_id=DAG,
        task_id=task_id,
        run_id=run_id,
        try_number=try_number,
        triggered_by=triggered_by,
    )


def _run() -> str:
    return f"manual__{uuid.uuid4().hex[:10]}"


@pytest.fixture
def table(stack: StackInfo, admin_conn: Any) -> str:
    name = f"appr_{uuid.uuid4().hex[:10]}"
    conn = admin_conn()
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, note text)")
    conn.execute(f"ALTER TABLE {name} OWNER TO warehouse_writer")
    return name


@pytest.fixture
def run(stack: StackInfo) -> Iterator[dict[str, StepClient]]:
    """A DAG run's sensor (requester) and sensitive task (target), each its own step."""
    run_id = _run()
    with (
        step_client(stack, _step(run_id, "approve", triggered_by="alice")) as sensor,
        step_client(stack, _step(run_id, "load", triggered_by="alice")) as load,
    ):
        yield {"sensor": sensor, "load": load}


def _ask(
    requester: StepClient,
    target_task: str,
    statements: list[tuple[str, Any]],
    *,
    try_number: int | None = None,
    digest: str | None = None,
) -> httpx.Response:
    digests = [statement_sha256(s, parameters_sha256(p)) for s, p in statements]
    body: dict[str, Any] = {
        "connection": CONNECTION,
        "target_task_id": target_task,
        "statements": [{"script": s, "parameters": p} for s, p in statements],
        "command_sha256": digest or command_sha256(digests),
        "justification": "monthly payroll load <b>urgent</b>",
    }
    if try_number is not None:
        body["target_try_number"] = try_number
    return requester.http.post("/api/airflow-hoop/reviews", json=body, headers=requester.headers())


def _created(response: httpx.Response) -> ReviewCreated:
    assert response.status_code in (200, 201), response.text
    return ReviewCreated.model_validate(response.json())


def _decide(
    stack: StackInfo,
    review_id: str,
    status: str,
    *,
    key: str | None = None,
    reason: str | None = None,
    reviewed_by: str | None = None,
    digest: str | None = None,
    url: str | None = None,
    force: bool = False,
) -> httpx.Response:
    body: dict[str, Any] = {"status": status, "force_review": force}
    ext: dict[str, Any] = {}
    if reason is not None:
        ext["reason"] = reason
    if reviewed_by is not None:
        ext["reviewed_by"] = reviewed_by
    if digest is not None:
        ext["command_sha256"] = digest
    if ext:
        body["airflow_hoop"] = ext
    with httpx.Client(base_url=url or stack.gateway_url, trust_env=False, timeout=30) as http:
        return http.put(
            f"/api/reviews/{review_id}",
            json=body,
            headers={"Authorization": f"Bearer {key or stack.reviewer_api_key}"},
        )


def _records_for(stack: StackInfo, review_id: str) -> list[LedgerRecord]:
    return [r for r in ledger_records(stack) if getattr(r.body, "review_id", None) == review_id]


def _refusals(stack: StackInfo, needle: str) -> list[PolicyRefused]:
    return [
        r.body
        for r in ledger_records(stack)
        if isinstance(r.body, PolicyRefused) and needle in r.body.reason
    ]


def _count(admin_conn: Any, table: str) -> int:
    return int(admin_conn().execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _insert(table: str, n: int = 1) -> str:
    return f"INSERT INTO {table} (id, note) VALUES ({n}, 'x')"


# -- the rule: reads pass, writes need an approval ------------------------------------------------
def test_read_runs_without_approval_and_write_without_review_is_refused(run, table, admin_conn):
    load = run["load"]
    assert load.exec(f"SELECT count(*) FROM {table}", autocommit=True).status_code == 200
    refused = load.exec(_insert(table), autocommit=True)
    assert refused.status_code == 403, refused.text
    message = refused.json()["message"]
    assert "no approval was requested for this step" in message
    assert "HoopApprovalSensor" in message  # the fix is named
    assert _count(admin_conn, table) == 0
    assert _refusals(load.stack, "approval required: no approval was requested")


def test_other_dags_are_not_governed_by_the_rule(stack, table, admin_conn):
    step = StepRef(dag_id="test_gateway_plain", task_id="t", run_id=_run())
    with step_client(stack, step) as client:
        assert client.exec(_insert(table), autocommit=True).status_code == 200
    assert _count(admin_conn, table) == 1


# -- the full path ------------------------------------------------------------------------------
def test_request_approve_execute_once_and_ledger_links_them(run, table, admin_conn, stack):
    sensor, load = run["sensor"], run["load"]
    params = encode_parameters({"id": 7, "note": "seven", "day": date(2026, 1, 31)})
    statement = (f"INSERT INTO {table} (id, note) VALUES (%(id)s, %(note)s || %(day)s)", params)
    created = _created(_ask(sensor, "load", [statement]))
    assert created.created and created.review.status == "PENDING"
    review = created.review
    ext = review.airflow_hoop
    assert ext is not None
    assert ext.target.task_id == "load" and ext.target.run_id == load.step.run_id
    assert ext.requester == sensor.step.key and ext.triggered_by == "alice"
    assert [g.group for g in review.review_groups_data] == ["data-owners"]

    # hoop's GET by review id and by session id
    with auditor(stack) as http:
        by_id = Review.model_validate(http.get(f"/api/reviews/{review.id}").json())
        by_session = Review.model_validate(http.get(f"/api/reviews/{review.session}").json())
    assert by_id.id == by_session.id == review.id

    # pending: the step is refused, and the refusal recorded
    pending = load.exec(statement[0], params, autocommit=True)
    assert pending.status_code == 403 and "still pending" in pending.json()["message"]

    decided = _decide(stack, review.id, "APPROVED", reason="checked the totals")
    assert decided.status_code == 200, decided.text
    approved = Review.model_validate(decided.json())
    assert approved.status == "APPROVED"
    assert approved.review_groups_data[0].reviewed_by is not None

    ok = load.exec(statement[0], params, autocommit=True)
    assert ok.status_code == 200, ok.text
    session_id = ok.json()["session_id"]
    assert _count(admin_conn, table) == 1

    again = load.exec(statement[0], params, autocommit=True)
    assert again.status_code == 403 and "already used" in again.json()["message"]
    assert _count(admin_conn, table) == 1

    records = _records_for(stack, review.id)
    kinds = [r.body.kind for r in records]
    assert kinds == ["review.requested", "review.decided", "review.executed"], kinds
    requested, decision, executed = (r.body for r in records)
    assert isinstance(requested, ReviewRequested) and isinstance(decision, ReviewDecided)
    assert isinstance(executed, ReviewExecuted)
    assert requested.command_sha256 == decision.command_sha256 == executed.command_sha256
    assert decision.approver == "api-key:devstack-reviewer"
    assert decision.channel == "gateway-api" and decision.reason == "checked the totals"
    assert records[0].step is not None and records[0].step.key == sensor.step.key
    assert records[2].step is not None and records[2].step.key == load.step.key
    # execution: the intent of the session follows the use of the approval
    intent = next(
        r
        for r in ledger_records(stack)
        if isinstance(r.body, SessionIntent) and r.body.session_id == session_id
    )
    assert intent.seq > records[2].seq
    assert intent.body.parameters_sha256 == requested.statements[0].parameters_sha256


def test_request_is_idempotent_while_open(run, table):
    statement = (_insert(table), None)
    first = _created(_ask(run["sensor"], "load", [statement]))
    second = _created(_ask(run["sensor"], "load", [statement]))
    assert first.created and not second.created
    assert first.review.id == second.review.id
    assert first.poll_token != second.poll_token


def test_poll_token_reads_only_its_review(run, table, stack):
    created = _created(_ask(run["sensor"], "load", [(_insert(table), None)]))
    url = f"/api/airflow-hoop/reviews/{created.review.id}/poll"
    with httpx.Client(base_url=stack.gateway_url, trust_env=False) as http:
        good = http.get(url, headers={"Authorization": f"Bearer {created.poll_token}"})
        assert good.status_code == 200 and good.json()["status"] == "PENDING"
        wrong = http.get(url, headers={"Authorization": "Bearer hrt_not-the-token"})
        assert wrong.status_code == 404
        assert http.get(url).status_code == 401


def test_command_digest_mismatch_in_request_is_refused(run, table):
    response = _ask(run["sensor"], "load", [(_insert(table), None)], digest="0" * 64)
    assert response.status_code == 400
    assert "does not match" in response.json()["message"]


# -- enforcement: changed SQL, another run, expiry, removed sensor -------------------------------
def test_changed_sql_after_approval_is_refused_and_recorded(run, table, admin_conn, stack):
    created = _created(_ask(run["sensor"], "load", [(_insert(table, 1), None)]))
    assert _decide(stack, created.review.id, "APPROVED").status_code == 200
    changed = run["load"].exec(_insert(table, 2) + " -- changed", autocommit=True)
    assert changed.status_code == 403
    assert "differs from the one under review" in changed.json()["message"]
    assert _count(admin_conn, table) == 0
    assert _refusals(stack, f"differs from the one under review {created.review.id}")
    # the approved command itself still runs
    assert run["load"].exec(_insert(table, 1), autocommit=True).status_code == 200


def test_approval_replayed_for_another_run_is_refused(run, table, admin_conn, stack):
    created = _created(_ask(run["sensor"], "load", [(_insert(table), None)]))
    assert _decide(stack, created.review.id, "APPROVED").status_code == 200
    other = _step(_run(), "load")
    with step_client(stack, other) as replay:
        refused = replay.exec(_insert(table), autocommit=True)
    assert refused.status_code == 403
    message = refused.json()["message"]
    assert f"was given for run {run['load'].step.run_id}" in message
    assert _count(admin_conn, table) == 0
    assert _refusals(stack, f"approval {created.review.id} was given for run")


def test_approval_bound_to_a_try_refuses_another_try(run, table, stack):
    created = _created(_ask(run["sensor"], "load", [(_insert(table), None)], try_number=2))
    assert _decide(stack, created.review.id, "APPROVED").status_code == 200
    refused = run["load"].exec(_insert(table), autocommit=True)  # try 1
    assert refused.status_code == 403 and "is for try 2, this is try 1" in refused.text


def test_expired_approval_is_refused(stack, table, admin_conn):
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    warehouse = next(c for c in settings["connections"] if c["name"] == CONNECTION)
    warehouse["approvals"] = [{**warehouse["approvals"][0], "expires_after_seconds": 1}]
    with extra_gateway(stack, "expiry", connections=settings["connections"]) as url:
        run_id = _run()
        with (
            step_client(stack, _step(run_id, "approve"), url=url) as sensor,
            step_client(stack, _step(run_id, "load"), url=url) as load,
        ):
            created = _created(_ask(sensor, "load", [(_insert(table), None)]))
            assert created.review.airflow_hoop.expires_after_seconds == 1
            assert _decide(stack, created.review.id, "APPROVED", url=url).status_code == 200
            time.sleep(1.5)
            refused = load.exec(_insert(table), autocommit=True)
    assert refused.status_code == 403 and "expired at" in refused.json()["message"]
    assert _count(admin_conn, table) == 0
    assert _refusals(stack, f"approval {created.review.id} expired at")


# -- who may decide ------------------------------------------------------------------------------
def test_requesting_step_and_target_step_cannot_approve(run, table, stack):
    created = _created(_ask(run["sensor"], "load", [(_insert(table), None)]))
    for client in (run["sensor"], run["load"]):
        response = client.http.put(
            f"/api/reviews/{created.review.id}",
            json={"status": "APPROVED"},
            headers=client.headers(),
        )
        assert response.status_code == 400
        assert "unable to self approve review" in response.json()["message"]
    assert len(_refusals(stack, "self-approval refused: step")) >= 2


def test_user_who_triggered_the_run_cannot_approve_unless_allowed(run, table, stack):
    created = _created(_ask(run["sensor"], "load", [(_insert(table), None)]))
    review_id = created.review.id
    refused = _decide(stack, review_id, "APPROVED", key=stack.approver_api_key, reviewed_by="alice")
    assert refused.status_code == 403
    assert "may not approve its reviews" in refused.json()["message"]
    assert _refusals(stack, "self-approval refused: alice triggered run")
    ok = _decide(
        stack, review_id, "APPROVED", key=stack.approver_api_key, reviewed_by="bob", reason="ok"
    )
    assert ok.status_code == 200, ok.text
    decision = _records_for(stack, review_id)[-1].body
    assert isinstance(decision, ReviewDecided)
    assert (decision.approver, decision.channel) == ("bob", "airflow-ui")
    assert decision.credential == "api-key:devstack-airflow-ui"


def test_triggerer_may_approve_when_the_rule_says_so(stack, table):
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    warehouse = next(c for c in settings["connections"] if c["name"] == CONNECTION)
    warehouse["approvals"] = [{**warehouse["approvals"][0], "triggerer_may_approve": True}]
    with (
        extra_gateway(stack, "triggerer", connections=settings["connections"]) as url,
        step_client(stack, _step(_run(), "approve", triggered_by="alice"), url=url) as s,
    ):
        created = _created(_ask(s, "load", [(_insert(table), None)]))
        response = _decide(
            stack,
            created.review.id,
            "APPROVED",
            key=stack.approver_api_key,
            reviewed_by="alice",
            url=url,
        )
    assert response.status_code == 200, response.text


def test_plugin_key_must_name_the_user_and_others_may_not(run, table, stack):
    review_id = _created(_ask(run["sensor"], "load", [(_insert(table), None)])).review.id
    unnamed = _decide(stack, review_id, "APPROVED", key=stack.approver_api_key)
    assert unnamed.status_code == 400 and "reviewed_by" in unnamed.text
    impersonating = _decide(stack, review_id, "APPROVED", reviewed_by="carol")
    assert impersonating.status_code == 403
    auditor_says = _decide(stack, review_id, "APPROVED", key=stack.auditor_api_key)
    assert auditor_says.status_code == 403


def test_decision_for_another_command_digest_is_refused(run, table, stack):
    created = _created(_ask(run["sensor"], "load", [(_insert(table), None)]))
    other = command_sha256([statement_sha256(_insert(table, 9), None)])
    refused = _decide(stack, created.review.id, "APPROVED", digest=other)
    assert refused.status_code == 400
    assert "not this review's command" in refused.json()["message"]
    assert _refusals(stack, "decision for another command refused")
    right = _decide(
        stack, created.review.id, "APPROVED", digest=created.review.airflow_hoop.command_sha256
    )
    assert right.status_code == 200


def test_reject_needs_a_reason_and_then_the_command_is_refused(run, table, stack, admin_conn):
    created = _created(_ask(run["sensor"], "load", [(_insert(table), None)]))
    review_id = created.review.id
    no_reason = _decide(stack, review_id, "REJECTED")
    assert no_reason.status_code == 400 and "needs a reason" in no_reason.text
    rejected = _decide(stack, review_id, "REJECTED", reason="wrong month")
    assert rejected.status_code == 200 and rejected.json()["status"] == "REJECTED"
    assert rejected.json()["rejection_reason"] == "wrong month"
    again = _decide(stack, review_id, "APPROVED")
    assert again.status_code == 400 and "wrong state" in again.json()["message"]
    refused = run["load"].exec(_insert(table), autocommit=True)
    assert refused.status_code == 403 and "was rejected: wrong month" in refused.text
    assert _count(admin_conn, table) == 0


# -- hoop's run-an-approved-session ----------------------------------------------------------------
def test_exec_endpoint_runs_the_approved_session_once(run, table, stack, admin_conn):
    created = _created(_ask(run["sensor"], "load", [(_insert(table), None)]))
    session = created.review.session
    load = run["load"]
    early = load.post(f"/api/sessions/{session}/exec")
    assert early.status_code == 403 and "pending" in early.text
    assert _decide(stack, created.review.id, "APPROVED").status_code == 200
    wrong_step = run["sensor"].post(f"/api/sessions/{session}/exec")
    assert wrong_step.status_code == 403
    ran = load.post(f"/api/sessions/{session}/exec")
    assert ran.status_code == 200, ran.text
    assert ran.json()["output_status"] == "success"
    assert _count(admin_conn, table) == 1
    assert load.post(f"/api/sessions/{session}/exec").status_code == 403
    with auditor(stack) as http:
        assert http.get(f"/api/reviews/{session}").json()["status"] == "EXECUTED"


def test_list_reviews_newest_first_with_filters(run, table, stack):
    first = _created(_ask(run["sensor"], "load", [(_insert(table, 1), None)])).review
    second = _created(_ask(run["sensor"], "load", [(_insert(table, 2), None)])).review
    with auditor(stack) as http:
        listed = http.get(
            "/api/reviews", params={"status": "PENDING", "run_id": run["load"].step.run_id}
        ).json()
    assert [r["id"] for r in listed] == [second.id, first.id]
    # a step sees only its own run's reviews
    other = _step(_run(), "x")
    with step_client(stack, other) as stranger:
        assert stranger.get("/api/reviews").json() == []
        assert stranger.get(f"/api/reviews/{first.id}").status_code == 404


# -- approver rules: any-of, all-of, people per group, break-glass ------------------------------
RULE_KEYS = {  # key name -> (groups, person)
    "ann": (["dba", "sec"], "ann"),
    "bob": (["dba"], None),
    "eve": (["ops"], None),
    "carol": (["oncall"], "carol"),
    "alice": (["oncall", "dba"], "alice"),  # alice triggers the runs
}


@pytest.fixture(scope="module")
def rules_gateway(stack: StackInfo) -> Iterator[tuple[str, dict[str, str]]]:
    """A gateway whose warehouse has an all-of rule (two dbas and one sec) for DAGs
    ``test_rules_all*`` and an any-of rule with a break-glass group for ``test_rules_any*``."""
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    warehouse = next(c for c in settings["connections"] if c["name"] == CONNECTION)
    base = {"required_for": "writes", "expires_after_seconds": 600}
    warehouse["approvals"] = [
        {
            **base,
            "name": "all-of",
            "dags": ["test_rules_all*"],
            "groups": [{"group": "dba", "min_approvals": 2}, "sec"],
            "all_groups_must_approve": True,
        },
        {
            **base,
            "name": "any-of",
            "dags": ["test_rules_any*"],
            "groups": ["dba", "sec"],
            "break_glass_groups": ["oncall"],
        },
    ]
    keys = {name: "hpk_" + uuid.uuid4().hex for name in RULE_KEYS}
    api_keys = settings["api_keys"] + [
        {"name": name, "sha256": ApiKey.digest(keys[name]), "role": "approver", "groups": groups}
        | ({"person": person} if person else {})
        for name, (groups, person) in RULE_KEYS.items()
    ]
    ui = next(k for k in api_keys if k.get("asserts_users"))
    ui["groups"] = ["dba", "sec"]
    with extra_gateway(
        stack, "rules", connections=settings["connections"], api_keys=api_keys
    ) as url:
        yield url, keys


def _rules_review(stack: StackInfo, url: str, dag: str, table: str) -> tuple[str, StepRef]:
    run_id = _run()
    load = StepRef(dag_id=dag, task_id="load", run_id=run_id, try_number=1, triggered_by="alice")
    asker = load.model_copy(update={"task_id": "approve"})
    with step_client(stack, asker, url=url) as sensor:
        return _created(_ask(sensor, "load", [(_insert(table), None)])).review.id, load


def test_all_of_counts_each_person_once_and_only_listed_groups(stack, table, rules_gateway):
    url, keys = rules_gateway
    review_id, _ = _rules_review(stack, url, "test_rules_all", table)

    def decide(key: str | None = None, **kw: Any) -> httpx.Response:
        return _decide(stack, review_id, "APPROVED", key=key, url=url, reason="ok", **kw)

    outsider = decide(keys["eve"])  # a group the rule does not list
    assert outsider.status_code == 400 and "not eligible" in outsider.text
    assert decide(keys["ann"]).json()["status"] == "PENDING"  # ann is in dba AND sec
    twice = decide(stack.approver_api_key, reviewed_by="ann")  # ann again, through the UI
    assert twice.status_code == 400 and "already approved" in twice.text
    # bob makes two dbas only if ann sits in sec: still one dba short.
    assert decide(keys["bob"]).json()["status"] == "PENDING"
    done = decide(stack.approver_api_key, reviewed_by="dave").json()
    assert done["status"] == "APPROVED"
    seats = {g["group"]: sorted(g["approvers"]) for g in done["review_groups_data"]}
    assert seats == {"dba": ["api-key:bob", "dave"], "sec": ["ann"]}
    assert _refusals(stack, "not eligible: api-key:eve is in none of the groups")
    requested = next(
        r.body for r in _records_for(stack, review_id) if isinstance(r.body, ReviewRequested)
    )
    assert isinstance(requested, ReviewRequested)
    assert (requested.min_approvals, requested.group_min_approvals) == (2, {"dba": 2, "sec": 1})


def test_break_glass_approves_alone_and_is_always_flagged(stack, table, admin_conn, rules_gateway):
    url, keys = rules_gateway
    review_id, load = _rules_review(stack, url, "test_rules_any", table)

    def decide(key: str, force: bool) -> httpx.Response:
        return _decide(stack, review_id, "APPROVED", key=key, url=url, reason="p1", force=force)

    unflagged = decide(keys["carol"], force=False)  # break-glass member, ordinary approval
    assert unflagged.status_code == 400 and "force_review" in unflagged.text
    assert decide(keys["bob"], force=True).status_code == 400  # not a break-glass member
    # alice triggered the run: her own key (person alice) may not approve it, break-glass or not.
    own = decide(keys["alice"], force=True)
    assert own.status_code == 403 and "may not approve its reviews" in own.text
    granted = decide(keys["carol"], force=True)
    assert granted.status_code == 200, granted.text
    review = Review.model_validate(granted.json())
    assert review.status == "APPROVED" and review.force_approval_groups == ["oncall"]
    assert [g.group for g in review.review_groups_data if g.forced_review] == ["oncall"]
    assert review.airflow_hoop and review.airflow_hoop.decisions[-1].break_glass
    decided = [r.body for r in _records_for(stack, review_id) if isinstance(r.body, ReviewDecided)]
    assert [(d.approver, d.break_glass) for d in decided] == [("carol", True)]
    with step_client(stack, load, url=url) as step:
        assert step.exec(_insert(table), autocommit=True).status_code == 200
    assert _count(admin_conn, table) == 1
    assert _refusals(stack, "break-glass refused: api-key:bob")
