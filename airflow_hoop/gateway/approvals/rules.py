"""Is a review approved? Rule evaluation over the approvals given so far (pure, no I/O).

A rule names review groups, each needing ``min_approvals`` distinct people, and how many of
the groups must be satisfied (one: any-of; all of them: all-of; hoop's ``min_approvals``
otherwise). Each person fills at most one seat in one group, whatever groups they belong to:
the answer is a matching of people to seats (augmenting paths), never a count of group
memberships, so one person in two groups cannot satisfy both. A break-glass approval (hoop's
``force_review``) approves alone; ``service.py`` flags it in the decision and the ledger.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from itertools import combinations

from pydantic import BaseModel, Field

from airflow_hoop.gateway.connection_settings import GroupNeed
from airflow_hoop.wire.reviews import DecisionRecord, ReviewedBy, ReviewGroup


class Approval(BaseModel):
    """One person's approval, with the review groups they belonged to when they gave it."""

    approver: str
    groups: frozenset[str]


class Outcome(BaseModel):
    """Where a review stands: approved or not, and who fills each group's seats."""

    approved: bool
    seats: dict[str, list[str]] = Field(
        description="group -> approvers counted for it (each approver in one group at most)"
    )

    def satisfied(self, need: GroupNeed) -> bool:
        return len(self.seats.get(need.group, [])) >= need.min_approvals


def evaluate(
    needs: Sequence[GroupNeed], groups_needed: int, approvals: Sequence[Approval]
) -> Outcome:
    """Approved when ``groups_needed`` of ``needs`` each get their people, no one counted twice.

    Approvals by the same person after the first count once; groups outside ``needs`` count
    for nothing.
    """
    people = _distinct(approvals)
    wanted = min(max(groups_needed, 1), len(needs))
    for chosen in combinations(needs, wanted):
        seats = _match(chosen, people)
        if all(len(seats[n.group]) >= n.min_approvals for n in chosen):
            # Show every group's standing: the chosen seats first, then whoever is left.
            rest = [p for p in people if not any(p.approver in v for v in seats.values())]
            others = [n for n in needs if n not in chosen]
            return Outcome(approved=True, seats={**seats, **_match(others, rest)})
    return Outcome(approved=False, seats=_match(needs, people))


def _distinct(approvals: Sequence[Approval]) -> list[Approval]:
    seen: dict[str, Approval] = {}
    for approval in approvals:
        seen.setdefault(approval.approver, approval)
    return list(seen.values())


def _match(needs: Sequence[GroupNeed], people: Sequence[Approval]) -> dict[str, list[str]]:
    """A maximum matching of people to the groups' seats (Kuhn's augmenting paths)."""
    seats = [(n.group, i) for n in needs for i in range(n.min_approvals)]
    holder: dict[int, int] = {}  # seat index -> person index

    def place(person: int, visited: set[int]) -> bool:
        for s, (group, _) in enumerate(seats):
            if group in people[person].groups and s not in visited:
                visited.add(s)
                if s not in holder or place(holder[s], visited):
                    holder[s] = person
                    return True
        return False

    for person in range(len(people)):
        place(person, set())
    out: dict[str, list[str]] = {n.group: [] for n in needs}
    for s in sorted(holder):
        out[seats[s][0]].append(people[holder[s]].approver)
    return out


def counted(decisions: Sequence[DecisionRecord]) -> list[Approval]:
    """The approvals that count toward the groups (break-glass ones approve on their own)."""
    return [
        Approval(approver=d.approver, groups=frozenset(d.groups or ([d.group] if d.group else [])))
        for d in decisions
        if d.decision == "APPROVED" and not d.break_glass
    ]


def regroup(
    groups: Sequence[ReviewGroup], groups_needed: int, decisions: Sequence[DecisionRecord]
) -> tuple[list[ReviewGroup], Outcome]:
    """The review's group entries (hoop's ``review_groups_data``) after ``decisions``."""
    needs = [
        GroupNeed(group=g.group, min_approvals=g.min_approvals)
        for g in groups
        if not g.forced_review
    ]
    outcome = evaluate(needs, groups_needed, counted(decisions))
    by_name = {d.approver: d for d in decisions if d.decision == "APPROVED"}
    out: list[ReviewGroup] = []
    for entry in groups:
        entry = entry.model_copy()
        if not entry.forced_review and entry.status in ("PENDING", "APPROVED"):
            entry.approvers = outcome.seats.get(entry.group, [])
            full = len(entry.approvers) >= entry.min_approvals
            entry.status = "APPROVED" if full else "PENDING"
            last = by_name.get(entry.approvers[-1]) if entry.approvers else None
            entry.reviewed_by = ReviewedBy(id=last.approver, name=last.approver) if last else None
            entry.review_date = last.time if last else None
        out.append(entry)
    return out, outcome


def forced_entry(record: DecisionRecord) -> ReviewGroup:
    """hoop's appended group entry of a forced (break-glass) approval."""
    return ReviewGroup(
        id=str(uuid.uuid4()),
        group=record.group or "",
        status="APPROVED",
        forced_review=True,
        review_date=record.time,
        reviewed_by=ReviewedBy(id=record.approver, name=record.approver),
        approvers=[record.approver],
    )
