"""The recovery tables: instances, leases, close-once; and keeping leases in step.

``gateway_instances`` (one row per gateway process and its heartbeat), ``sessions.instance_id``
(which process runs a session), ``gateway_leases`` (the step credentials each process was
issued, open until recorded revoked) and the ``sessions_close_once`` trigger. Applied by
``schema.migrate``; used by the sweep in ``ledger_io/recovery.py`` (see docs/faults.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from airflow_hoop.ledger.records import CredentialIssued, CredentialRevoked, RecordBody, StepRef

if TYPE_CHECKING:
    from airflow_hoop.gateway.db.appender import Appended, Then

RECOVERY_SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_instances (
    id            text PRIMARY KEY,
    host_key      text NOT NULL,
    pid           int NOT NULL,
    proc_start    bigint,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz,
    swept_by      text
);
-- Each instance declares how late its heartbeat may be: a sweeper with a shorter bound
-- must not fence a live replica configured with a longer one.
ALTER TABLE gateway_instances
    ADD COLUMN IF NOT EXISTS stale_after_seconds double precision NOT NULL DEFAULT 30;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS instance_id text;
CREATE INDEX IF NOT EXISTS sessions_open_idx ON sessions (instance_id) WHERE status = 'open';
CREATE TABLE IF NOT EXISTS gateway_leases (
    lease_id      text PRIMARY KEY,
    instance_id   text NOT NULL,
    connection    text NOT NULL,
    db_user       text NOT NULL,
    step          jsonb,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX IF NOT EXISTS gateway_leases_open_idx ON gateway_leases (instance_id)
    WHERE revoked_at IS NULL;

-- A session is closed once: a gateway declared dead that still tries to record a result
-- (it was only stalled) is refused, so no session has two results.
CREATE OR REPLACE FUNCTION sessions_close_once() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'done' THEN
        RAISE EXCEPTION 'session % is already closed', OLD.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'the recovery sweep closed it after its gateway was declared dead';
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER sessions_close_once
    BEFORE UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION sessions_close_once();

REVOKE ALL ON gateway_instances, gateway_leases FROM PUBLIC;
"""


def grant_recovery(conn: psycopg.Connection[Any], role: sql.Identifier) -> None:
    """What the gateway role needs on the recovery tables (called by ``schema.migrate``)."""
    conn.execute(sql.SQL("REVOKE ALL ON gateway_instances, gateway_leases FROM {}").format(role))
    conn.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE ON gateway_instances, gateway_leases TO {}").format(
            role
        )
    )


def lease_then(step: StepRef | None, body: RecordBody, instance: str) -> Then | None:
    """Statements that keep ``gateway_leases`` in step with a credential record (same commit)."""
    if isinstance(body, CredentialIssued):
        step_json = None if step is None else step.model_dump_json()

        async def issued(conn: psycopg.AsyncConnection[Any], _: Appended) -> None:
            await conn.execute(
                "INSERT INTO gateway_leases (lease_id, instance_id, connection, db_user, step, "
                "expires_at) VALUES (%s, %s, %s, %s, %s::jsonb, "
                "now() + make_interval(secs => %s)) ON CONFLICT (lease_id) DO NOTHING",
                (
                    body.lease_id,
                    instance,
                    body.connection,
                    body.db_user,
                    step_json,
                    body.ttl_seconds,
                ),
            )

        return issued
    if isinstance(body, CredentialRevoked):

        async def revoked(conn: psycopg.AsyncConnection[Any], _: Appended) -> None:
            await conn.execute(
                "UPDATE gateway_leases SET revoked_at = now() "
                "WHERE lease_id = %s AND revoked_at IS NULL",
                (body.lease_id,),
            )

        return revoked
    return None
