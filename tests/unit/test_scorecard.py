"""The readiness scorecard on records written to show each gap (what a real gateway refuses
to produce: a shared or static database user, an unapproved write under a rule)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow_hoop.ledger.commands import statement_sha256
from airflow_hoop.ledger.scorecard import ConnectionPolicy, RuleInfo, Scorecard
from airflow_hoop.ledger.verification import Verification

SINCE = datetime(2026, 11, 1, tzinfo=timezone.utc)
UNTIL = datetime(2026, 11, 3, tzinfo=timezone.utc)


class Ledger:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def add(self, dag: str | None, body: dict[str, Any], day: int = 1) -> None:
        step = None if dag is None else {"dag_id": dag, "task_id": "t", "run_id": "r"}
        self.records.append(
            {
                "seq": len(self.records) + 1,
                "time": f"2026-11-0{day}T10:00:00+00:00",
                "step": step,
                "body": body,
            }
        )

    def session(self, dag: str, sid: str, script: str, label: str, user: str, **extra: Any) -> None:
        self.add(
            dag,
            {
                "kind": "session.intent",
                "session_id": sid,
                "connection": extra.pop("connection", "warehouse"),
                "script": script,
                "label": label,
                "db_user": user,
                **extra,
            },
        )
        self.add(dag, {"kind": "session.result", "session_id": sid, "status": "success"})

    def issue(self, dag: str, user: str) -> None:
        self.add(dag, {"kind": "credential.issued", "db_user": user, "connection": "warehouse"})


POLICY = [ConnectionPolicy(name="warehouse", rules=[RuleInfo(dags=["pay_*"])])]


def _score(ledger: Ledger, verification: Verification | None = None, **kw: Any) -> dict[str, Any]:
    card = Scorecard(first_seq=1, last_seq=len(ledger.records), since=SINCE, until=UNTIL, **kw)
    for record in ledger.records:
        card.add(record)
    result = card.finish(
        verification or Verification(ok=True, checkpoints=2, anchor="dir", anchor_matched=2)
    )
    return {"ready": result.ready, **{line.name: line for line in result.lines}}


def test_a_clean_ledger_is_ready() -> None:
    ledger = Ledger()
    ledger.issue("etl", "u1")
    ledger.session("etl", "s1", "SELECT 1", "read", "u1")
    ledger.session("etl", "s2", "COMMIT", "transaction_control", "u1")
    ledger.add("etl", {"kind": "policy.refused", "connection": "x", "reason": "r"}, day=2)
    ledger.add(None, {"kind": "checkpoint", "statement": {"last_seq": 7}}, day=2)
    score = _score(ledger, policy=POLICY)
    assert score["ready"], score
    assert score["records per day"].status == "ok"
    assert score["writes on connections with no approval rule"].value == "0"


def test_shared_and_static_identities_are_gaps() -> None:
    ledger = Ledger()
    ledger.issue("etl_a", "shared")
    ledger.session("etl_a", "s1", "SELECT 1", "read", "shared")
    ledger.session("etl_b", "s2", "SELECT 1", "read", "shared")  # another step, same user
    ledger.session("etl_c", "s3", "SELECT 1", "read", "static_etl")  # never issued
    score = _score(ledger)
    assert not score["ready"]
    assert score["steps under a shared identity"].value == "2"
    assert score["steps under a shared identity"].status == "gap"
    assert score["steps under a static identity"].value == "2"  # etl_b's and etl_c's users
    assert "etl_c/t/r/1" in score["steps under a static identity"].detail


def test_writes_are_scored_against_the_rule_that_covers_the_dag() -> None:
    ledger = Ledger()
    for dag, user in (("pay_run", "u1"), ("pay_ok", "u2"), ("etl", "u3")):
        ledger.issue(dag, user)
    ledger.session("pay_run", "s1", "DELETE FROM t", "write", "u1")  # no approval used
    digest = statement_sha256("UPDATE t SET x = 1", None)
    ledger.add(
        "pay_ok",
        {
            "kind": "review.executed",
            "connection": "warehouse",
            "statement_sha256": digest,
            "review_id": "r1",
        },
    )
    ledger.session("pay_ok", "s2", "UPDATE t SET x = 1", "write", "u2")
    ledger.session("etl", "s3", "INSERT INTO t VALUES (1)", "write", "u3")  # no rule for etl
    score = _score(ledger, policy=POLICY)
    unapproved = score["writes under a rule without an approval"]
    assert (unapproved.value, unapproved.status) == ("1", "gap")
    assert "pay_run/t/r/1" in unapproved.detail and "pay_ok" not in unapproved.detail
    no_rule = score["writes on connections with no approval rule"]
    assert (no_rule.value, no_rule.status) == ("1", "warn")


def test_break_glass_and_the_record_lines() -> None:
    ledger = Ledger()
    ledger.add("etl", {"kind": "review.requested", "review_id": "r1", "connection": "warehouse",
                       "triggered_by": "alice"})  # fmt: skip
    ledger.add(None, {"kind": "review.decided", "review_id": "r1", "decision": "APPROVED",
                      "approver": "alice", "channel": "airflow-ui"})  # fmt: skip
    ledger.add(None, {"kind": "review.decided", "review_id": "r2", "decision": "APPROVED",
                      "approver": "ops", "channel": "gateway-api"})  # fmt: skip
    score = _score(ledger, Verification(ok=True, checkpoints=1))
    glass = score["break-glass approvals"]
    assert (
        glass.value == "2" and "triggered the run" in glass.detail and "gateway API" in glass.detail
    )
    assert score["unsigned tail"].status == "gap"  # no checkpoint signs these records
    assert score["anchor coverage"].value == "not compared"
    assert score["records per day"].status == "warn"  # 2026-11-02 had none
    assert not score["ready"]


def test_a_checkpoint_ending_the_bundle_is_no_unsigned_tail() -> None:
    ledger = Ledger()
    ledger.issue("etl", "u1")
    ledger.session("etl", "s1", "SELECT 1", "read", "u1")
    ledger.add(None, {"kind": "checkpoint", "statement": {"last_seq": 3}})
    assert _score(ledger)["unsigned tail"].value == "0"
    ledger.session("etl", "s2", "SELECT 2", "read", "u1")
    tail = _score(ledger)["unsigned tail"]
    assert (tail.value, tail.status) == ("2", "gap") and "seq 5 on" in tail.detail
