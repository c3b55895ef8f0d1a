"""The ``reviews`` table: each change is written together with its ledger record.

A review row is operational state (status, groups, use count); the evidence is the ledger:
``review.requested``, ``review.decided`` and ``review.executed`` are appended in the same
transaction as the row change, so the table and the chain cannot disagree. Decisions and uses
lock the row (``SELECT ... FOR UPDATE``): two approvers, or two gateway processes running the
same approved statement, are serialised, and an approval is used exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field, JsonValue

from airflow_hoop.gateway.db.appender import Appended, append_in
from airflow_hoop.gateway.db.store import GatewayStore, json_dumps
from airflow_hoop.ledger.records import RecordBody, ReviewStatement, ReviewTarget, StepRef
from airflow_hoop.wire.reviews import DecisionRecord, ReviewGroup, ReviewStatus

T = TypeVar("T")


def utc_now() -> datetime:
    """The time reviews are judged by (expiry, decisions)."""
    return datetime.now(timezone.utc)


class StoredStatement(ReviewStatement):
    """A statement under review, with the wire parameters the step will send (not recorded)."""

    parameters: JsonValue = None


class ReviewRow(BaseModel):
    """One ``reviews`` row."""

    id: uuid.UUID
    session_id: uuid.UUID
    connection: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int | None = None
    requester: str
    requester_step: StepRef
    triggered_by: str | None = None
    status: ReviewStatus
    command_sha256: str
    statements: list[StoredStatement]
    justification: str = ""
    context: dict[str, str] = Field(default_factory=dict)
    rule: str | None = None
    review_groups: list[ReviewGroup]
    decisions: list[DecisionRecord] = Field(default_factory=list)
    min_approvals: int
    force_approval_groups: list[str] = Field(
        default_factory=list, description="break-glass groups (hoop's force_approval_groups)"
    )
    expires_after_seconds: int
    triggerer_may_approve: bool = False
    rejection_reason: str | None = None
    used_count: int = 0
    executed_try: int | None = None
    poll_token_sha256: list[str] = Field(default_factory=list)
    created_at: datetime
    decided_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def target(self) -> ReviewTarget:
        return ReviewTarget(
            dag_id=self.dag_id,
            task_id=self.task_id,
            run_id=self.run_id,
            map_index=self.map_index,
            try_number=self.try_number,
        )

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


_COLUMNS = list(ReviewRow.model_fields)
_JSON_COLUMNS = {
    "requester_step",
    "statements",
    "context",
    "review_groups",
    "decisions",
    "poll_token_sha256",
    "force_approval_groups",
}
#: Columns a decision or a use may change.
_MUTABLE = [
    "status",
    "review_groups",
    "decisions",
    "rejection_reason",
    "used_count",
    "executed_try",
    "poll_token_sha256",
    "decided_at",
    "expires_at",
]


def _params(row: ReviewRow, columns: list[str]) -> dict[str, Any]:
    data = row.model_dump(mode="json")
    out: dict[str, Any] = {}
    for column in columns:
        if column in _JSON_COLUMNS:
            out[column] = Jsonb(data[column], dumps=json_dumps)
        elif column in ("id", "session_id", "created_at", "decided_at", "expires_at"):
            out[column] = getattr(row, column)  # native types for psycopg
        else:
            out[column] = data[column]
    return out


Mutation = Callable[[ReviewRow], Awaitable[tuple[ReviewRow, StepRef | None, str, RecordBody]]]


class ReviewStore:
    """Review rows in the gateway database (the same pool as the ledger)."""

    def __init__(self, store: GatewayStore) -> None:
        self.store = store

    async def insert(self, row: ReviewRow, actor: str, body: RecordBody) -> Appended:
        """A new review and its ``review.requested`` record, atomically."""
        async with self.store.connection("record the review request") as conn, conn.transaction():
            appended = await append_in(conn, self.store.signer, row.requester_step, actor, body)
            names = ", ".join(_COLUMNS)
            values = ", ".join(f"%({c})s" for c in _COLUMNS)
            await conn.execute(
                f"INSERT INTO reviews ({names}) VALUES ({values})", _params(row, _COLUMNS)
            )
            return appended

    async def get(self, id_or_session: uuid.UUID) -> ReviewRow | None:
        """By review id or by its session id (hoop accepts either)."""
        async with self.store.connection("read a review") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM reviews WHERE id = %s OR session_id = %s",
                (id_or_session, id_or_session),
            )
            found = await cur.fetchone()
            return None if found is None else ReviewRow.model_validate(found)

    async def search(
        self,
        *,
        status: list[str] | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
        limit: int = 100,
    ) -> list[ReviewRow]:
        """Newest first."""
        where = (
            "WHERE (%(st)s::text[] IS NULL OR status = ANY(%(st)s)) "
            "AND (%(dag)s::text IS NULL OR dag_id = %(dag)s) "
            "AND (%(run)s::text IS NULL OR run_id = %(run)s) "
            "AND (%(task)s::text IS NULL OR task_id = %(task)s "
            "     OR requester_step->>'task_id' = %(task)s)"
        )
        params = {"st": status, "dag": dag_id, "run": run_id, "task": task_id, "lim": limit}
        async with self.store.connection("list reviews") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM reviews {where} "
                "ORDER BY created_at DESC, id LIMIT %(lim)s",
                params,
            )
            return [ReviewRow.model_validate(r) for r in await cur.fetchall()]

    async def find_open(
        self, target: ReviewTarget, connection: str, command_sha256: str
    ) -> ReviewRow | None:
        """A review of the same step and command that may still be decided or used."""
        async with self.store.connection("read reviews") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM reviews "
                "WHERE dag_id = %s AND task_id = %s AND run_id = %s AND map_index = %s "
                "AND try_number IS NOT DISTINCT FROM %s AND connection = %s "
                "AND command_sha256 = %s AND status IN ('PENDING', 'APPROVED') "
                "AND (expires_at IS NULL OR expires_at > now()) "
                "ORDER BY created_at DESC LIMIT 1",
                (
                    target.dag_id,
                    target.task_id,
                    target.run_id,
                    target.map_index,
                    target.try_number,
                    connection,
                    command_sha256,
                ),
            )
            found = await cur.fetchone()
            return None if found is None else ReviewRow.model_validate(found)

    async def add_poll_token(self, review_id: uuid.UUID, digest: str, keep: int = 10) -> None:
        async with self.store.connection("update a review") as conn:
            await conn.execute(
                "UPDATE reviews SET poll_token_sha256 = "
                "(SELECT coalesce(jsonb_agg(t), '[]'::jsonb) FROM (SELECT t FROM "
                "jsonb_array_elements(poll_token_sha256 || %s::jsonb) WITH ORDINALITY AS x(t, n) "
                "ORDER BY n DESC LIMIT %s) AS newest) WHERE id = %s",
                (Jsonb([digest]), keep, review_id),
            )

    async def others_with_statement(
        self, dag_id: str, task_id: str, run_id: str, statement_sha256: str
    ) -> list[ReviewRow]:
        """Reviews of the same task in *other* runs holding this statement (replay evidence)."""
        async with self.store.connection("read reviews") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM reviews WHERE dag_id = %s AND task_id = %s "
                "AND run_id <> %s AND statements @> %s ORDER BY created_at DESC LIMIT 5",
                (dag_id, task_id, run_id, Jsonb([{"sha256": statement_sha256}])),
            )
            return [ReviewRow.model_validate(r) for r in await cur.fetchall()]

    async def mutate(
        self, review_id: uuid.UUID, change: Mutation, what: str
    ) -> tuple[ReviewRow, Appended]:
        """Lock one review, let ``change`` compute its new state and record, write both.

        ``change`` raises to refuse: nothing is written then.
        """
        async with self.store.connection(what) as conn, conn.transaction():
            row = await _locked(conn, "id = %s", (review_id,))
            if not row:
                raise LookupError(str(review_id))
            new, step, actor, body = await change(row[0])
            appended = await append_in(conn, self.store.signer, step, actor, body)
            await _update(conn, new)
            return new, appended

    async def use(
        self,
        target: ReviewTarget,
        pick: Callable[[list[ReviewRow]], tuple[ReviewRow, StepRef, str, RecordBody] | None],
    ) -> tuple[ReviewRow, Appended] | list[ReviewRow]:
        """Lock the reviews of a task instance; ``pick`` returns the used one, or None.

        Returns the updated review and its record, or (nothing used) the rows that were seen.
        """
        async with self.store.connection("use an approval") as conn, conn.transaction():
            rows = await _locked(
                conn,
                "dag_id = %s AND task_id = %s AND run_id = %s AND map_index = %s",
                (target.dag_id, target.task_id, target.run_id, target.map_index),
            )
            chosen = pick(rows)
            if chosen is None:
                return rows
            new, step, actor, body = chosen
            appended = await append_in(conn, self.store.signer, step, actor, body)
            await _update(conn, new)
            return new, appended


async def _locked(
    conn: psycopg.AsyncConnection[Any], where: str, params: tuple[Any, ...]
) -> list[ReviewRow]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM reviews WHERE {where} ORDER BY created_at FOR UPDATE",
        params,
    )
    return [ReviewRow.model_validate(r) for r in await cur.fetchall()]


async def _update(conn: psycopg.AsyncConnection[Any], row: ReviewRow) -> None:
    sets = ", ".join(f"{c} = %({c})s" for c in _MUTABLE)
    params = _params(row, _MUTABLE)
    params["id"] = row.id
    await conn.execute(f"UPDATE reviews SET {sets} WHERE id = %(id)s", params)
