"""Approval rules: any-of, all-of, people per group, break-glass; nobody counted twice."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from airflow_hoop.gateway.approvals.rules import Approval, evaluate, regroup
from airflow_hoop.gateway.connection_settings import ApprovalRule, GroupNeed
from airflow_hoop.wire.reviews import DecisionRecord, ReviewGroup

DBA, SEC = GroupNeed(group="dba"), GroupNeed(group="sec")


def _a(who: str, *groups: str) -> Approval:
    return Approval(approver=who, groups=frozenset(groups))


def test_any_of_is_met_by_one_listed_group() -> None:
    assert evaluate([DBA, SEC], 1, [_a("ann", "sec")]).approved


def test_any_of_is_not_met_by_a_group_outside_the_list() -> None:
    outcome = evaluate([DBA, SEC], 1, [_a("eve", "ops"), _a("joe", "admins")])
    assert not outcome.approved
    assert outcome.seats == {"dba": [], "sec": []}


def test_all_of_needs_every_group() -> None:
    assert not evaluate([DBA, SEC], 2, [_a("ann", "dba")]).approved
    assert evaluate([DBA, SEC], 2, [_a("ann", "dba"), _a("bob", "sec")]).approved


def test_one_person_in_two_groups_counts_for_one() -> None:
    both = _a("ann", "dba", "sec")
    assert not evaluate([DBA, SEC], 2, [both]).approved
    # The same person again (another channel or a retry) adds nothing.
    assert not evaluate([DBA, SEC], 2, [both, _a("ann", "sec")]).approved
    # A second person completes it whichever group ann is seated in.
    assert evaluate([DBA, SEC], 2, [both, _a("bob", "dba")]).approved


def test_people_per_group_are_distinct() -> None:
    two_dbas = GroupNeed(group="dba", min_approvals=2)
    assert not evaluate([two_dbas], 1, [_a("ann", "dba"), _a("ann", "dba")]).approved
    assert evaluate([two_dbas], 1, [_a("ann", "dba"), _a("bob", "dba")]).approved


def test_seating_finds_the_assignment_a_greedy_count_misses() -> None:
    # ann could fill dba or sec; only seating her in sec lets bob complete dba.
    needs = [GroupNeed(group="dba", min_approvals=1), GroupNeed(group="sec", min_approvals=1)]
    outcome = evaluate(needs, 2, [_a("ann", "dba", "sec"), _a("bob", "dba")])
    assert outcome.approved and outcome.seats == {"dba": ["bob"], "sec": ["ann"]}


def test_any_of_with_people_per_group_does_not_spread_people() -> None:
    # A maximum matching over all seats could put ann in dba and bob in sec (neither full);
    # any-of must find dba = {ann, bob}.
    needs = [GroupNeed(group="dba", min_approvals=2), GroupNeed(group="sec", min_approvals=2)]
    outcome = evaluate(needs, 1, [_a("ann", "dba", "sec"), _a("bob", "dba", "sec")])
    assert outcome.approved


def _decision(who: str, groups: list[str], *, glass: bool = False) -> DecisionRecord:
    return DecisionRecord(
        decision="APPROVED",
        approver=who,
        credential=f"api-key:{who}",
        channel="gateway-api",
        time=datetime.now(timezone.utc),
        groups=groups,
        break_glass=glass,
    )


def test_break_glass_approvals_do_not_fill_review_groups() -> None:
    groups = [ReviewGroup(id="1", group="dba"), ReviewGroup(id="2", group="sec")]
    entries, outcome = regroup(groups, 2, [_decision("oncall", ["dba", "sec"], glass=True)])
    assert not outcome.approved and all(e.status == "PENDING" for e in entries)


def test_regroup_reads_decisions_of_older_gateways() -> None:
    # Decisions recorded before rules had several groups name one ``group`` and no ``groups``.
    old = DecisionRecord.model_validate(
        {
            "decision": "APPROVED",
            "group": "dba",
            "approver": "ann",
            "credential": "api-key:ann",
            "channel": "gateway-api",
            "time": "2026-01-01T00:00:00Z",
        }
    )
    entries, outcome = regroup([ReviewGroup(id="1", group="dba")], 1, [old])
    assert outcome.approved and entries[0].status == "APPROVED"
    assert entries[0].reviewed_by is not None and entries[0].reviewed_by.name == "ann"


def test_old_settings_keep_their_meaning() -> None:
    rule = ApprovalRule.model_validate({"groups": ["dba", "sec", "ops"], "min_approvals": 2})
    assert rule.groups_needed == 2 and rule.group_names == ["dba", "sec", "ops"]
    assert [n.min_approvals for n in rule.needs] == [1, 1, 1] and rule.break_glass_groups == []
    capped = ApprovalRule.model_validate({"groups": ["dba"], "min_approvals": 5})
    assert capped.groups_needed == 1


def test_new_settings() -> None:
    rule = ApprovalRule.model_validate(
        {
            "groups": [{"group": "dba", "min_approvals": 2}, "sec"],
            "all_groups_must_approve": True,
            "break_glass_groups": ["oncall"],
        }
    )
    assert rule.groups_needed == 2
    assert [(n.group, n.min_approvals) for n in rule.needs] == [("dba", 2), ("sec", 1)]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"groups": ["dba", "dba"]}, "listed twice"),
        ({"groups": ["dba"], "break_glass_groups": ["dba"]}, "both review and break-glass"),
        (
            {"groups": ["dba", "sec"], "all_groups_must_approve": True, "min_approvals": 1},
            "drop one of them",
        ),
        ({"groups": [{"group": "dba", "min_approvals": 0}]}, "greater than or equal to 1"),
    ],
)
def test_incoherent_rules_are_refused(rule: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ApprovalRule.model_validate(rule)


def test_a_ui_key_cannot_also_be_one_person() -> None:
    from airflow_hoop.gateway.settings import ApiKey

    digest = "0" * 64
    assert ApiKey(name="carol", sha256=digest, role="approver", person="carol").person == "carol"
    with pytest.raises(ValidationError, match="exclude each other"):
        ApiKey(name="ui", sha256=digest, role="approver", asserts_users=True, person="carol")
