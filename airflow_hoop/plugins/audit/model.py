"""What the Audit tabs show, built from a run's ledger records: per step (one try of one task
instance) its runners, credential times, commands in order with their results, stored output
and the approvals that gated them.

Records are read with ``json.loads`` rather than the pydantic record models: a task with
1,000 statements has over 2,000 records and the tab has a 300 ms budget. The views
themselves are pydantic models (what the templates receive).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel, Field

from airflow_hoop.ledger.records import StepRef
from airflow_hoop.plugins.common import COLLAPSE_CHARS, COLLAPSE_LINES
from airflow_hoop.wire.audit import RunRecords, StoredOutput


class Decision(BaseModel):
    """One approver's decision on a review."""

    decision: str
    approver: str
    reason: str | None = None
    channel: str
    time: datetime
    seq: int
    break_glass: bool = False


class Approval(BaseModel):
    """A review: who asked and why, and the decisions on it."""

    review_id: str
    requested_by: str | None = None
    justification: str = ""
    requested_at: datetime | None = None
    target: str = ""
    decisions: list[Decision] = Field(default_factory=list)


class CommandView(BaseModel):
    """One command of a step, its result and what gated it."""

    index: int
    seq: int
    time: datetime
    session_id: str
    connection: str
    script: str
    shell: bool = False
    runner: str | None = None
    status: str = "open"
    exit_code: int | None = None
    rows: int | None = None
    duration_ms: float | None = None
    error: str | None = None
    masked: int | None = Field(None, description="redactions, when a masking policy applied")
    output: StoredOutput | None = None
    approval: Approval | None = None
    #: The gateway's label from PostgreSQL's parser (``ledger/sql_label.py``): read, write or
    #: transaction_control; None for shell commands and records written before labels.
    label: str | None = None
    #: An agent's tool call (the ledger's ``AgentCall``, as recorded): tool, model, turn, digests.
    agent: dict[str, Any] | None = None

    @property
    def collapsed(self) -> bool:
        return len(self.script) > COLLAPSE_CHARS or self.script.count("\n") >= COLLAPSE_LINES

    @property
    def first_line(self) -> str:
        line = self.script.strip().splitlines()[0] if self.script.strip() else ""
        return line[:120]


class Event(BaseModel):
    """A credential issue or revoke, a policy refusal."""

    time: datetime
    seq: int
    what: str
    detail: str = ""


class StepAudit(BaseModel):
    """Everything the ledger says about one try of one task instance."""

    step: StepRef
    key: str
    first_seq: int
    last_seq: int
    runners: list[str] = Field(default_factory=list)
    commands: list[CommandView] = Field(default_factory=list)
    credentials: list[Event] = Field(default_factory=list)
    refusals: list[Event] = Field(default_factory=list)
    requested: list[Approval] = Field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for c in self.commands if c.status not in ("success", "open"))

    @property
    def agent_calls(self) -> list[CommandView]:
        """The commands an agent's tool calls ran, in order (docs/agents.md)."""
        return [c for c in self.commands if c.agent]

    @property
    def agent_models(self) -> list[str]:
        return sorted({str(c.agent["model"]) for c in self.agent_calls if c.agent})


def build_steps(data: RunRecords) -> list[StepAudit]:
    """Group a run's records by step, in the order steps first appear."""
    records = cast(list[dict[str, Any]], data.records)  # JSON objects, as the ledger wrote them
    parsed = [(int(r["seq"]), r) for r in records]
    reviews = _reviews(parsed)
    steps: dict[str, StepAudit] = {}
    by_session: dict[str, CommandView] = {}
    gate: dict[str, Approval] = {}  # step key -> approval of its next command
    for seq, record in parsed:
        step = record.get("step")
        if not step:
            continue
        key = StepRef.key_of(step)
        view = steps.get(key)
        if view is None:
            view = steps[key] = StepAudit(
                step=StepRef.model_validate(step), key=key, first_seq=seq, last_seq=seq
            )
        view.last_seq = seq
        body = record["body"]
        kind = body["kind"]
        when = datetime.fromisoformat(record["time"])
        if kind == "session.intent":
            shell = body.get("shell") or {}
            runner = body.get("db_user") or shell.get("run_as")
            # model_construct: these values come from records the gateway validated when it
            # wrote them; validating 1,000 commands again costs a third of the tab's budget.
            command = CommandView.model_construct(
                index=len(view.commands) + 1,
                seq=seq,
                time=when,
                session_id=body["session_id"],
                connection=body["connection"],
                script=body["script"],
                shell=bool(shell),
                runner=runner,
                output=data.outputs.get(body["session_id"]),
                approval=gate.pop(key, None),
                label=body.get("label"),
                agent=body.get("agent"),
                status="open",
                exit_code=None,
                rows=None,
                duration_ms=None,
                error=None,
                masked=None,
            )
            if runner and runner not in view.runners:
                view.runners.append(runner)
            by_session[command.session_id] = command
            view.commands.append(command)
        elif kind == "session.result" and body["session_id"] in by_session:
            _finish(by_session[body["session_id"]], body)
        elif kind == "credential.issued":
            view.credentials.append(
                Event(time=when, seq=seq, what="issued", detail=f"{body['db_user']}")
            )
            if body["db_user"] not in view.runners:
                view.runners.append(body["db_user"])
        elif kind == "credential.revoked":
            view.credentials.append(
                Event(
                    time=when,
                    seq=seq,
                    what="revoked",
                    detail=f"{body['db_user']} ({body['reason']})",
                )
            )
        elif kind == "policy.refused":
            view.refusals.append(Event(time=when, seq=seq, what="refused", detail=body["reason"]))
        elif kind == "review.executed" and body["review_id"] in reviews:
            gate[key] = reviews[body["review_id"]]
        elif kind == "review.requested" and body["review_id"] in reviews:
            view.requested.append(reviews[body["review_id"]])
    return list(steps.values())


def _finish(command: CommandView, body: dict[str, Any]) -> None:
    command.status = body["status"]
    command.exit_code = body.get("exit_code")
    returned, rowcount = body.get("rows_returned", 0), body.get("rowcount", -1)
    command.rows = returned if returned else (rowcount if rowcount >= 0 else None)
    command.duration_ms = body.get("duration_ms")
    command.error = body.get("error")
    masking = body.get("masking")
    if masking is not None:
        command.masked = int(masking.get("total_redact_count", 0))


def _reviews(parsed: list[tuple[int, dict[str, Any]]]) -> dict[str, Approval]:
    found: dict[str, Approval] = {}
    for seq, record in parsed:
        body = record["body"]
        kind = body["kind"]
        if kind == "review.requested":
            target = body["target"]
            found[body["review_id"]] = Approval(
                review_id=body["review_id"],
                requested_by=record.get("actor"),
                justification=body.get("justification", ""),
                requested_at=datetime.fromisoformat(record["time"]),
                target=f"{target['task_id']} on {body['connection']}",
            )
        elif kind == "review.decided":
            review = found.setdefault(body["review_id"], Approval(review_id=body["review_id"]))
            review.decisions.append(
                Decision(
                    decision=body["decision"],
                    approver=body["approver"],
                    reason=body.get("reason"),
                    channel=body["channel"],
                    time=datetime.fromisoformat(record["time"]),
                    seq=seq,
                    break_glass=bool(body.get("break_glass")),
                )
            )
    return found


def select_try(
    steps: list[StepAudit], task_id: str, map_index: int, try_number: int | None
) -> tuple[StepAudit | None, list[int]]:
    """The step of that try (the latest when None) and every try the ledger holds."""
    mine = [s for s in steps if s.step.task_id == task_id and s.step.map_index == map_index]
    tries = sorted({s.step.try_number for s in mine})
    if not mine:
        return None, tries
    wanted = try_number if try_number is not None else tries[-1]
    chosen = [s for s in mine if s.step.try_number == wanted]
    return (chosen[0] if chosen else None), tries
