"""The review rehearsal's readiness scorecard: does the evidence answer the four questions?

Fed the bundle's records one at a time (parsed JSON, ``records.jsonl``), then the verification
of the bundle; pure, so a reviewer can recompute it from the bundle alone. Each line is
``ok``, ``warn`` (a reviewer will ask; look at it) or ``gap`` (the evidence does not answer
the question): the rehearsal is ready when there is no gap.

1. Which identity ran each step? A step's database user must be its own: issued to that step
   (a ``credential.issued`` record of the step) and used by no other step. A user used by two
   steps is a shared identity; a user never issued to the step is a static one.
2. What did it reach? Records per day of the window (a day without any is worth a look) and
   the masking policies that applied to output.
3. Were sensitive steps approved? Writes (PostgreSQL's label ``write``; every shell command) on
   connections where no approval rule covers the DAG, writes under a rule with no used approval
   (``review.executed`` of the step and statement), and break-glass approvals (decided outside
   the Airflow UI, or by the user who triggered the run). Transaction control is not a write.
4. Could the record have been altered? The chain and signatures verify, no record is after the
   last signed checkpoint, and every checkpoint matches the anchor.

Approval rules come from the gateway's settings when given (``ConnectionPolicy``); without
them a connection counts as ruled when the window shows a review or a read-only run on it, and
the scorecard says the policy was inferred.
"""

from __future__ import annotations

import fnmatch
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from airflow_hoop.ledger.commands import statement_sha256
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.ledger.verification import Verification

Status = Literal["ok", "warn", "gap"]
#: How many examples a line names (step keys, connections, review ids).
_EXAMPLES = 5
#: A window longer than this is not checked for empty days (a year of days is not a finding).
_MAX_DAYS_CHECKED = 92


class RuleInfo(BaseModel):
    """One approval rule of a connection, as the scorecard needs it."""

    name: str | None = None
    dags: list[str] = Field(default_factory=lambda: ["*"])
    required_for: Literal["writes", "all"] = "writes"


class ConnectionPolicy(BaseModel):
    """A connection's approval rules and masking policy name (from the gateway's settings)."""

    name: str
    rules: list[RuleInfo] = Field(default_factory=list)
    masking: str | None = None


class ScoreLine(BaseModel):
    """One line of the scorecard: which question, what was counted, and what it means."""

    question: int = Field(ge=1, le=4)
    name: str
    value: str
    status: Status
    detail: str = ""


class ScorecardResult(BaseModel):
    """The scorecard: its lines and whether the evidence is ready for a reviewer."""

    lines: list[ScoreLine]
    ready: bool
    policy_source: str


@dataclass(frozen=True, slots=True)
class _Write:
    """A write waiting for its result (kept small: a month holds many)."""

    step: str
    dag: str
    connection: str
    digest: str
    shell: bool


class Scorecard:
    """Accumulates the records of a window; ``finish`` scores them."""

    def __init__(
        self,
        *,
        first_seq: int | None,
        last_seq: int | None,
        since: datetime,
        until: datetime,
        dags: list[str] | None = None,
        policy: list[ConnectionPolicy] | None = None,
    ) -> None:
        self.first_seq, self.last_seq = first_seq, last_seq
        self.since, self.until = since, until
        self.dags = set(dags or [])
        self.policy = {p.name: p for p in policy} if policy is not None else None
        #: Records per UTC day, by the record time's date ("YYYY-MM-DD": the ledger writes UTC).
        self.per_day: Counter[str] = Counter()
        self.records = 0
        self._issued: dict[str, set[str]] = defaultdict(set)  # db user -> steps it was issued to
        self._used: dict[str, set[str]] = defaultdict(set)  # db user -> steps that used it
        self._writes: dict[str, _Write] = {}  # session id -> a write waiting for its result
        self._approved: set[tuple[str, str, str]] = set()  # (step, connection, statement)
        self._approved_any: set[tuple[str, str]] = set()  # (step, connection): shell
        self._ruled_seen: set[str] = set()  # connections with a review or a read-only run
        self._triggered: dict[str, str] = {}  # review id -> who triggered the run
        self.ran_writes: list[_Write] = []
        self.break_glass: list[str] = []
        self.masking: Counter[str] = Counter()
        self.unmasked: Counter[str] = Counter()
        self.refusals = 0
        self._unsigned: deque[int] = deque()  # seqs after the last checkpoint's last_seq

    # -- feeding -----------------------------------------------------------------------------
    def add(self, record: dict[str, Any]) -> None:
        """One record of the bundle; records outside the window's seqs are only context."""
        seq = record.get("seq", 0)
        body = record.get("body") or {}
        kind = body.get("kind")
        step = record.get("step")
        if kind == "checkpoint":
            signed = int(body["statement"]["last_seq"])
            while self._unsigned and self._unsigned[0] <= signed:
                self._unsigned.popleft()
        else:
            # A checkpoint record is itself signed (by Vault): only other records can be
            # unsigned, so one ending the bundle is no tail.
            self._unsigned.append(seq)
        if kind == "credential.issued" and step is not None:
            # Context records too: a step's credential may be issued before the window.
            self._issued[body["db_user"]].add(StepRef.key_of(step))
        if self.first_seq is None or not (self.first_seq <= seq <= (self.last_seq or seq)):
            return
        if step is not None and self.dags and step.get("dag_id") not in self.dags:
            return
        self.records += 1
        self.per_day[record["time"][:10]] += 1
        if kind == "session.intent" and step is not None:
            self._intent(body, StepRef.key_of(step), step)
        elif kind == "session.result":
            self._result(body)
        elif kind == "review.requested":
            self._ruled_seen.add(body["connection"])
            if body.get("triggered_by"):
                self._triggered[body["review_id"]] = body["triggered_by"]
        elif kind == "review.executed" and step is not None:
            key = StepRef.key_of(step)
            self._approved.add((key, body["connection"], body["statement_sha256"]))
            self._approved_any.add((key, body["connection"]))
        elif kind == "review.decided" and body.get("decision") == "APPROVED":
            self._decided(body)
        elif kind == "policy.refused":
            self.refusals += 1

    def _intent(self, body: dict[str, Any], key: str, step: dict[str, Any]) -> None:
        connection = body["connection"]
        if body.get("db_user"):
            self._used[body["db_user"]].add(key)
        if body.get("read_only"):
            self._ruled_seen.add(connection)
        shell = body.get("shell") is not None
        # Old records have no label: counted as writes (the conservative reading).
        if not shell and body.get("label") in ("read", "transaction_control"):
            return
        digest = statement_sha256(body.get("script", ""), body.get("parameters_sha256"))
        self._writes[body["session_id"]] = _Write(
            step=key, dag=step["dag_id"], connection=connection, digest=digest, shell=shell
        )

    def _result(self, body: dict[str, Any]) -> None:
        write = self._writes.pop(body.get("session_id", ""), None)
        if write is not None and body.get("status") == "success":
            self.ran_writes.append(write)
        masking = body.get("masking")
        if masking:
            self.masking[masking["policy"]] += 1
        else:
            self.unmasked[body.get("connection", "?")] += 1

    def _decided(self, body: dict[str, Any]) -> None:
        review = body.get("review_id", "")
        if body.get("channel") == "gateway-api":
            self.break_glass.append(f"{review} by {body.get('approver')} (gateway API)")
        elif self._triggered.get(review) == body.get("approver"):
            self.break_glass.append(f"{review} by {body.get('approver')} (triggered the run)")

    # -- scoring -----------------------------------------------------------------------------
    def finish(self, verification: Verification) -> ScorecardResult:
        lines = [*self._identity(), *self._reach(), *self._approvals(), *self._record(verification)]
        source = (
            "the gateway's settings"
            if self.policy is not None
            else "inferred from the records (a review or a read-only run on the connection)"
        )
        return ScorecardResult(
            lines=lines, ready=all(line.status != "gap" for line in lines), policy_source=source
        )

    def _identity(self) -> list[ScoreLine]:
        shared = sorted({s for steps in self._used.values() if len(steps) > 1 for s in steps})
        static = sorted(
            {s for user, steps in self._used.items() for s in steps - self._issued.get(user, set())}
        )
        steps = {s for users in self._used.values() for s in users}
        return [
            _line(
                1,
                "steps under a shared identity",
                len(shared),
                shared,
                "a database user used by more than one step: the database cannot tell them apart",
            ),
            _line(
                1,
                "steps under a static identity",
                len(static),
                static,
                "a database user not "
                "issued to the step in the bundle (a static account, or issued before it)",
            ),
            ScoreLine(
                question=1,
                name="steps with a database user of their own",
                value=str(len(steps) - len(set(shared) | set(static))),
                status="ok",
            ),
            ScoreLine(
                question=1,
                name="steps in trusted-workers mode",
                value="not recorded",
                status="warn",
                detail="the ledger does not say how a step's identity was "
                "attested: check that no 'hoop' connection signs on the worker "
                "(workload_signer key_file without the issuer)",
            ),
        ]

    def _reach(self) -> list[ScoreLine]:
        lines = [
            ScoreLine(
                question=2,
                name="records in the window",
                value=str(self.records),
                status="ok" if self.records else "gap",
                detail="" if self.records else "nothing to review in this window",
            )
        ]
        days = _days(self.since, self.until)
        if days is not None:
            empty = [d.isoformat() for d in days if not self.per_day.get(d.isoformat())]
            busiest = max(self.per_day.values(), default=0)
            lines.append(
                ScoreLine(
                    question=2,
                    name="records per day",
                    value=f"{self.records / max(len(days), 1):.0f} on average, {busiest} at most",
                    status="warn" if empty else "ok",
                    detail=f"{len(empty)} day(s) without records: {_names(empty)}" if empty else "",
                )
            )
        policies = ", ".join(f"{p} ({n})" for p, n in self.masking.most_common())
        unmasked = ", ".join(f"{c} ({n})" for c, n in self.unmasked.most_common(_EXAMPLES))
        lines.append(
            ScoreLine(
                question=2,
                name="masking policies in force",
                value=policies or "none",
                status="ok" if self.masking else "warn",
                detail=f"results without masking: {unmasked}" if unmasked else "",
            )
        )
        return lines

    def _approvals(self) -> list[ScoreLine]:
        no_rule: Counter[str] = Counter()
        unapproved: list[str] = []
        for write in self.ran_writes:
            if not self._ruled(write):
                no_rule[write.connection] += 1
            elif not self._approved_write(write):
                unapproved.append(f"{write.step} on {write.connection}")
        no_rule_text = ", ".join(f"{c} ({n})" for c, n in no_rule.most_common(_EXAMPLES))
        return [
            ScoreLine(
                question=3,
                name="writes on connections with no approval rule",
                value=str(sum(no_rule.values())),
                status="warn" if no_rule else "ok",
                detail=no_rule_text and f"no rule covers these DAGs there: {no_rule_text}",
            ),
            _line(
                3,
                "writes under a rule without an approval",
                len(unapproved),
                unapproved,
                "a write ran where a rule applied, without a used approval",
            ),
            ScoreLine(
                question=3,
                name="break-glass approvals",
                value=str(len(self.break_glass)),
                status="warn" if self.break_glass else "ok",
                detail=_names(self.break_glass),
            ),
            ScoreLine(question=3, name="refused commands", value=str(self.refusals), status="ok"),
        ]

    def _ruled(self, write: _Write) -> bool:
        if self.policy is None:
            return write.connection in self._ruled_seen
        conn = self.policy.get(write.connection)
        return conn is not None and any(
            any(fnmatch.fnmatchcase(write.dag, g) for g in rule.dags) for rule in conn.rules
        )

    def _approved_write(self, write: _Write) -> bool:
        if write.shell:  # a shell approval binds its arguments too: the step's use of it
            return (write.step, write.connection) in self._approved_any
        return (write.step, write.connection, write.digest) in self._approved

    def _record(self, verification: Verification) -> list[ScoreLine]:
        failure = verification.failure
        lines = [
            ScoreLine(
                question=4,
                name="chain and signatures",
                value="verify" if verification.ok else "FAIL",
                status="ok" if verification.ok else "gap",
                detail=failure.describe() if failure is not None else verification.summary(),
            ),
            ScoreLine(
                question=4,
                name="unsigned tail",
                value=str(len(self._unsigned)),
                status="gap" if self._unsigned else "ok",
                detail=f"records after the last checkpoint (seq {self._unsigned[0]} on): "
                "export again after the next one"
                if self._unsigned
                else "",
            ),
        ]
        if verification.anchor is None:
            lines.append(
                ScoreLine(
                    question=4,
                    name="anchor coverage",
                    value="not compared",
                    status="gap",
                    detail="give --anchor DIR (the stack: its own)",
                )
            )
        else:
            total = verification.checkpoints
            matched = verification.anchor_matched
            lines.append(
                ScoreLine(
                    question=4,
                    name="anchor coverage",
                    value=f"{matched}/{total} checkpoints",
                    status="ok" if total and matched >= total else "gap",
                    detail=f"anchor {verification.anchor}",
                )
            )
        return lines


def _line(question: int, name: str, count: int, examples: list[str], why: str) -> ScoreLine:
    """A count that is a gap when not zero, naming a few examples."""
    detail = f"{why}: {_names(examples)}" if count else ""
    return ScoreLine(
        question=question,
        name=name,
        value=str(count),
        status="gap" if count else "ok",
        detail=detail,
    )


def _names(items: list[str]) -> str:
    more = len(items) - _EXAMPLES
    return ", ".join(items[:_EXAMPLES]) + (f" and {more} more" if more > 0 else "")


def _days(since: datetime, until: datetime) -> list[date] | None:
    first, last = since.date(), (until - timedelta(microseconds=1)).date()
    count = (last - first).days + 1
    if count > _MAX_DAYS_CHECKED or count < 1:
        return None
    return [first + timedelta(days=i) for i in range(count)]
