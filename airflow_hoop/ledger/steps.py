"""Read a ledger back as steps: who ran what, as which database user, with what result.

This is the first of the reviewer's questions answered from the record alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, Field

from airflow_hoop.ledger.records import (
    CredentialIssued,
    CredentialRevoked,
    LedgerRecord,
    PolicyRefused,
    SessionIntent,
    SessionResult,
    StepRef,
)


class StatementView(BaseModel):
    session_id: str
    connection: str
    script: str
    db_user: str | None
    intent_seq: int
    result_seq: int | None = None
    status: str = "open"
    rowcount: int = -1
    rows_returned: int = 0
    duration_ms: float | None = None
    error: str | None = None


class StepView(BaseModel):
    step: StepRef
    statements: list[StatementView] = Field(default_factory=list)
    db_users: list[str] = Field(default_factory=list)
    issued_at: datetime | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    refusals: list[str] = Field(default_factory=list)


def steps_from_records(records: Iterable[LedgerRecord]) -> list[StepView]:
    """Group records by step, in the order steps first appear."""
    steps: dict[str, StepView] = {}
    by_session: dict[str, StatementView] = {}
    for record in records:
        if record.step is None:
            continue
        view = steps.setdefault(record.step.key, StepView(step=record.step))
        body = record.body
        if isinstance(body, SessionIntent):
            statement = StatementView(
                session_id=body.session_id,
                connection=body.connection,
                script=body.script,
                db_user=body.db_user,
                intent_seq=record.seq,
            )
            by_session[body.session_id] = statement
            view.statements.append(statement)
        elif isinstance(body, SessionResult) and body.session_id in by_session:
            statement = by_session[body.session_id]
            statement.result_seq = record.seq
            statement.status = body.status
            statement.rowcount = body.rowcount
            statement.rows_returned = body.rows_returned
            statement.duration_ms = body.duration_ms
            statement.error = body.error
        elif isinstance(body, CredentialIssued):
            view.db_users.append(body.db_user)
            view.issued_at = view.issued_at or record.time
        elif isinstance(body, CredentialRevoked):
            view.revoked_at = record.time
            view.revoke_reason = body.reason
        elif isinstance(body, PolicyRefused):
            view.refusals.append(body.reason)
    return list(steps.values())
