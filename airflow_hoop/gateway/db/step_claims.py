"""Which steps ended, and which gateway process holds each live step (table ``gateway_steps``).

One row per step key. ``ended_at`` is set by ``POST /steps/end`` on any process: every identity
token of the step issued at or before it (``iat``) is refused from then on. A task resumed after
a deferral keeps its try (and so its step key) but logs in to Vault again: its fresh tokens
are issued after the end and the step may be claimed again. ``owner`` is the process
(``store.instance_id``) that holds the step's database users and connections.

Both facts sit in one row on purpose: claiming a step (before a credential is minted) and
ending it are upserts of the same row, so PostgreSQL serialises them. A claim that commits
after the end sees ``ended_at`` (the ``ON CONFLICT ... WHERE`` is re-checked on the row's
latest version) and mints nothing; an end that commits after a claim reaches the owner through
the step-end bus, which releases what it holds (``execution/steps.py``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel

from airflow_hoop.errors import LedgerError
from airflow_hoop.ledger.records import PolicyRefused, StepRef

if TYPE_CHECKING:
    from airflow_hoop.gateway.db.store import GatewayStore

log = logging.getLogger(__name__)

STEPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_steps (
    step_key    text PRIMARY KEY,
    owner       text,
    claimed_at  timestamptz,
    ended_at    timestamptz
);
CREATE INDEX IF NOT EXISTS gateway_steps_ended_idx ON gateway_steps (ended_at)
    WHERE ended_at IS NOT NULL;
-- An end is never undone nor moved back: the tokens it refused stay refused.
CREATE OR REPLACE FUNCTION gateway_steps_stay_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.ended_at IS NOT NULL AND (NEW.ended_at IS NULL OR NEW.ended_at < OLD.ended_at) THEN
        RAISE EXCEPTION 'step % has ended', OLD.step_key
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER gateway_steps_stay_ended
    BEFORE UPDATE ON gateway_steps
    FOR EACH ROW EXECUTE FUNCTION gateway_steps_stay_ended();
REVOKE ALL ON gateway_steps FROM PUBLIC;
"""

# The owner keeps its claim; a claim is free when nobody holds it or its holder is fenced
# (stopped cleanly, or declared dead by the recovery sweep: ``gateway_instances.stopped_at``).
_CLAIM = """
WITH claimed AS (
    INSERT INTO gateway_steps AS s (step_key, owner, claimed_at) VALUES (%(key)s, %(me)s, now())
    ON CONFLICT (step_key) DO UPDATE SET owner = EXCLUDED.owner, claimed_at = now()
    WHERE (s.ended_at IS NULL OR s.ended_at < to_timestamp(%(iat)s)) AND (
        s.owner IS NULL OR s.owner = EXCLUDED.owner
        OR EXISTS (SELECT 1 FROM gateway_instances i
                    WHERE i.id = s.owner AND i.stopped_at IS NOT NULL))
    RETURNING s.owner
)
SELECT (SELECT owner FROM claimed) IS NOT NULL
"""

_HOLDER = (
    "SELECT owner, ended_at IS NOT NULL AND ended_at >= to_timestamp(%s) "
    "FROM gateway_steps WHERE step_key = %s"
)

_END = """
INSERT INTO gateway_steps AS s (step_key, ended_at) VALUES (%s, now())
ON CONFLICT (step_key) DO UPDATE SET ended_at = greatest(s.ended_at, now()), owner = NULL
"""


class Claim(BaseModel):
    """The outcome of claiming a step: ours, ended, or held by another gateway process."""

    outcome: Literal["owned", "ended", "elsewhere"]
    owner: str | None = None


class StepClaims:
    """The ``gateway_steps`` rows of the gateway database, as this process uses them."""

    def __init__(self, store: GatewayStore) -> None:
        self._store = store

    @property
    def me(self) -> str:
        return self._store.instance_id

    async def claim(self, step_key: str, issued_at: float) -> Claim:
        """Claim ``step_key`` for this process, for a token issued at ``issued_at`` (one round
        trip when it succeeds)."""
        params = {"key": step_key, "me": self.me, "iat": issued_at}
        async with self._store.connection("claim a step") as conn:
            row = await (await conn.execute(_CLAIM, params)).fetchone()
            if row is not None and row[0]:
                return Claim(outcome="owned", owner=self.me)
            holder = await (await conn.execute(_HOLDER, (issued_at, step_key))).fetchone()
        if holder is None:  # cannot happen after the insert above; refuse rather than guess
            return Claim(outcome="elsewhere", owner="unknown")
        owner, ended = holder
        return Claim(outcome="ended") if ended else Claim(outcome="elsewhere", owner=owner)

    async def end(self, step_key: str) -> None:
        """Record that the step ended: from now on no process claims it (raises LedgerError)."""
        async with self._store.connection("record a step's end") as conn:
            await conn.execute(_END, (step_key,))

    async def release(self, step_keys: list[str]) -> None:
        """Give up this process's claim on steps it no longer holds anything for."""
        if not step_keys:
            return
        async with self._store.connection("release steps") as conn:
            await conn.execute(
                "UPDATE gateway_steps SET owner = NULL "
                "WHERE step_key = ANY(%s) AND owner = %s AND ended_at IS NULL",
                (step_keys, self.me),
            )

    async def ended_at(self, step_key: str) -> float | None:
        """When the step last ended (unix time), or None."""
        async with self._store.connection("check a step's end") as conn:
            row = await (
                await conn.execute(
                    "SELECT extract(epoch FROM ended_at)::float8 FROM gateway_steps "
                    "WHERE step_key = %s AND ended_at IS NOT NULL",
                    (step_key,),
                )
            ).fetchone()
        return None if row is None else float(row[0])

    async def ended_since(self, seconds: float) -> dict[str, float]:
        """Steps that ended in the last ``seconds`` (a token outlives none older): their end."""
        async with self._store.connection("read ended steps") as conn:
            rows = await (
                await conn.execute(
                    "SELECT step_key, extract(epoch FROM ended_at)::float8 FROM gateway_steps "
                    "WHERE ended_at > now() - make_interval(secs => %s)",
                    (seconds,),
                )
            ).fetchall()
        return {r[0]: float(r[1]) for r in rows}


async def record_step_refusal(
    store: GatewayStore, step: StepRef, connection: str, reason: str
) -> None:
    """Append a ``policy.refused`` record for a refused step; logged (never raised) on failure:
    the refusal stands either way."""
    try:
        await store.append(step, step.key, PolicyRefused(connection=connection, reason=reason))
    except LedgerError as exc:
        log.error("refusal of step %s not recorded: %s", step.key, exc)


def grant_steps(conn: psycopg.Connection[Any], role: sql.Identifier) -> None:
    """Read, claim and end: no DELETE (an ended step stays ended)."""
    conn.execute(sql.SQL("REVOKE ALL ON gateway_steps FROM {}").format(role))
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON gateway_steps TO {}").format(role))
