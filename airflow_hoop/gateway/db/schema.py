"""The gateway database's schema: tables, indexes, triggers, and the gateway role's grants.

``migrate`` applies it (idempotent) over a superuser connection; the recovery tables are in
``recovery_schema.py``. The gateway itself only reads and writes rows (``store.py``).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from airflow_hoop.errors import ConfigError
from airflow_hoop.gateway.db.notification_outbox import NOTIFICATIONS_SCHEMA, grant_notifications
from airflow_hoop.gateway.db.recovery_schema import RECOVERY_SCHEMA, grant_recovery
from airflow_hoop.gateway.db.step_claims import STEPS_SCHEMA, grant_steps

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    time        timestamptz NOT NULL,
    kind        text NOT NULL,
    dag_id      text,
    task_id     text,
    run_id      text,
    try_number  int,
    map_index   int,
    connection  text,
    session_id  text,
    body        text NOT NULL,
    hash        text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);
CREATE INDEX IF NOT EXISTS ledger_time_idx ON ledger (time);
CREATE INDEX IF NOT EXISTS ledger_step_idx ON ledger (dag_id, run_id, task_id);
CREATE INDEX IF NOT EXISTS ledger_session_idx ON ledger (session_id);
CREATE INDEX IF NOT EXISTS ledger_checkpoint_idx ON ledger (seq) WHERE kind = 'checkpoint';
-- The Airflow UI's audit search (db/audit_reads.py): newest commands first for each
-- filter, so every index ends with seq. Partial: appends of other kinds pay nothing, and the
-- JSON expressions (identical to audit_reads.py's) are parsed for commands only.
CREATE INDEX IF NOT EXISTS ledger_cmd_dag_idx ON ledger (dag_id, seq)
    WHERE kind IN ('session.intent', 'session.result');
CREATE INDEX IF NOT EXISTS ledger_cmd_task_idx ON ledger (task_id, seq)
    WHERE kind IN ('session.intent', 'session.result');
CREATE INDEX IF NOT EXISTS ledger_cmd_connection_idx ON ledger (connection, seq)
    WHERE kind IN ('session.intent', 'session.result');
CREATE INDEX IF NOT EXISTS ledger_cmd_user_idx ON ledger
    ((coalesce((body::jsonb)->'body'->>'db_user', (body::jsonb)->'body'->'shell'->>'run_as')), seq)
    WHERE kind = 'session.intent';
CREATE INDEX IF NOT EXISTS ledger_cmd_triggered_by_idx ON ledger
    (((body::jsonb)->'step'->>'triggered_by'), seq) WHERE kind = 'session.intent';
-- A time window as a seq range, read from the index alone.
CREATE INDEX IF NOT EXISTS ledger_time_seq_idx ON ledger (time, seq);
CREATE INDEX IF NOT EXISTS ledger_cmd_status_idx ON ledger (((body::jsonb)->'body'->>'status'), seq)
    WHERE kind = 'session.result';

-- The batch signature (ledger/batch.py) on a group-commit batch's last row; outside the
-- hashed record: it signs the chain hash, so it cannot be inside it.
ALTER TABLE ledger ADD COLUMN IF NOT EXISTS batch_sig text;
CREATE INDEX IF NOT EXISTS ledger_key_idx ON ledger (seq) WHERE kind = 'gateway.key';

-- Take the append lock, then read the head: one round trip. Each statement of a volatile
-- plpgsql function takes a new snapshot, so the head read sees the previous holder's commit.
-- With the head's batch signature and time: a gateway checks a head it did not write.
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'ledger_lock_head' AND pronargs = 0
               AND NOT 'batch_sig' = ANY(coalesce(proargnames, '{}'))) THEN
        DROP FUNCTION ledger_lock_head();
    END IF;
END $$;
CREATE OR REPLACE FUNCTION ledger_lock_head(
    OUT seq bigint, OUT hash text, OUT batch_sig text, OUT "time" timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7525356031004992615);  -- appender.LEDGER_LOCK_KEY
    SELECT l.seq, l.hash, l.batch_sig, l.time INTO seq, hash, batch_sig, "time"
        FROM ledger l ORDER BY l.seq DESC LIMIT 1;
END
$$;
REVOKE ALL ON FUNCTION ledger_lock_head() FROM PUBLIC;

-- Take the append lock and check that the head is still the one the caller expects (the head
-- its previous append left); raise AH001 otherwise. Lets a gateway send lock, insert and commit
-- in one round trip when nobody else appended meanwhile (appender.py).
CREATE OR REPLACE FUNCTION ledger_lock_expect(expected_seq bigint, expected_hash text)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    head_seq bigint;
    head_hash text;
BEGIN
    PERFORM pg_advisory_xact_lock(7525356031004992615);  -- appender.LEDGER_LOCK_KEY
    SELECT l.seq, l.hash INTO head_seq, head_hash FROM ledger l ORDER BY l.seq DESC LIMIT 1;
    IF head_seq IS DISTINCT FROM expected_seq OR head_hash IS DISTINCT FROM expected_hash THEN
        RAISE EXCEPTION 'the ledger head moved' USING ERRCODE = 'AH001';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION ledger_lock_expect(bigint, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on ledger refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'ledger records are never changed or removed; append a new record';
END
$$;
CREATE OR REPLACE TRIGGER ledger_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE OR REPLACE TRIGGER ledger_no_truncate
    BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
-- ALWAYS: fire even under session_replication_role = replica, the usual trigger bypass.
ALTER TABLE ledger ENABLE ALWAYS TRIGGER ledger_no_update_delete;
ALTER TABLE ledger ENABLE ALWAYS TRIGGER ledger_no_truncate;

CREATE TABLE IF NOT EXISTS sessions (
    id              uuid PRIMARY KEY,
    connection      text NOT NULL,
    step_key        text NOT NULL,
    dag_id          text NOT NULL,
    task_id         text NOT NULL,
    run_id          text NOT NULL,
    try_number      int NOT NULL,
    map_index       int NOT NULL,
    "user"          text,
    status          text NOT NULL CHECK (status IN ('open', 'done')),
    exit_code       int,
    output_status   text,
    output          text,
    truncated       boolean NOT NULL DEFAULT false,
    result          jsonb,
    script          text NOT NULL,
    correlation_id  text,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    start_date      timestamptz NOT NULL,
    end_date        timestamptz
);
CREATE INDEX IF NOT EXISTS sessions_correlation_idx ON sessions (correlation_id);
CREATE INDEX IF NOT EXISTS sessions_step_idx ON sessions (step_key, start_date);
-- Commands still running, for the audit search's status "open" (db/audit_reads.py).
CREATE INDEX IF NOT EXISTS sessions_open_idx ON sessions (id) WHERE status = 'open';
-- A shell command's output can be megabytes: lz4 stores it about twice as fast as pglz
-- (measured). Kept as is where the server was built without lz4.
DO $$ BEGIN
    ALTER TABLE sessions ALTER COLUMN output SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN NULL;
END $$;

-- Reviews (approvals): mutable operational state; every change is also a ledger record.
CREATE TABLE IF NOT EXISTS reviews (
    id                      uuid PRIMARY KEY,
    session_id              uuid NOT NULL UNIQUE,
    connection              text NOT NULL,
    dag_id                  text NOT NULL,
    task_id                 text NOT NULL,
    run_id                  text NOT NULL,
    map_index               int NOT NULL,
    try_number              int,
    requester               text NOT NULL,
    requester_step          jsonb NOT NULL,
    triggered_by            text,
    status                  text NOT NULL CHECK (status IN ('PENDING', 'APPROVED', 'REJECTED',
                                                            'REVOKED', 'PROCESSING', 'EXECUTED')),
    command_sha256          text NOT NULL CHECK (command_sha256 ~ '^[0-9a-f]{64}$'),
    statements              jsonb NOT NULL,
    justification           text NOT NULL DEFAULT '',
    context                 jsonb NOT NULL DEFAULT '{}'::jsonb,
    rule                    text,
    review_groups           jsonb NOT NULL,
    decisions               jsonb NOT NULL DEFAULT '[]'::jsonb,
    min_approvals           int NOT NULL,
    expires_after_seconds   int NOT NULL,
    triggerer_may_approve   boolean NOT NULL DEFAULT false,
    rejection_reason        text,
    used_count              int NOT NULL DEFAULT 0,
    executed_try            int,
    poll_token_sha256       jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at              timestamptz NOT NULL,
    decided_at              timestamptz,
    expires_at              timestamptz
);
-- Break-glass groups (approval rules, docs/approvals.md); reviews of older gateways have none.
ALTER TABLE reviews ADD COLUMN IF NOT EXISTS force_approval_groups jsonb NOT NULL
    DEFAULT '[]'::jsonb;
CREATE INDEX IF NOT EXISTS reviews_target_idx ON reviews (dag_id, run_id, task_id, map_index);
CREATE INDEX IF NOT EXISTS reviews_status_idx ON reviews (status, created_at);
-- The notification sweep's recent decisions (db/notification_outbox.py).
CREATE INDEX IF NOT EXISTS reviews_decided_idx ON reviews (decided_at)
    WHERE decided_at IS NOT NULL;

REVOKE ALL ON ledger, sessions, reviews FROM PUBLIC;
"""


def migrate(conn: psycopg.Connection[Any], gateway_role: str) -> None:
    """Create or update the schema and grant ``gateway_role`` exactly what it needs.

    ``conn`` is an autocommit superuser connection to the gateway database; the tables are
    owned by that superuser, so the gateway role can never alter, drop or disable triggers.
    Idempotent.
    """
    _check_role(conn, gateway_role)
    role = sql.Identifier(gateway_role)
    with conn.transaction():
        conn.execute(SCHEMA)
        conn.execute(RECOVERY_SCHEMA)  # instances, leases, close-once (ledger_io/recovery.py)
        conn.execute(STEPS_SCHEMA)  # ended steps and step owners (db/step_claims.py)
        conn.execute(NOTIFICATIONS_SCHEMA)  # approval notifications (db/notification_outbox.py)
        # Re-state the grants each time: a previous broader grant must not survive.
        conn.execute(sql.SQL("REVOKE ALL ON ledger, sessions FROM {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT, INSERT ON ledger TO {}").format(role))
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION ledger_lock_head() TO {}").format(role))
        conn.execute(
            sql.SQL("GRANT EXECUTE ON FUNCTION ledger_lock_expect(bigint, text) TO {}").format(role)
        )
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON sessions TO {}").format(role))
        conn.execute(sql.SQL("REVOKE ALL ON reviews FROM {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON reviews TO {}").format(role))
        grant_recovery(conn, role)
        grant_steps(conn, role)
        grant_notifications(conn, role)


def _check_role(conn: psycopg.Connection[Any], gateway_role: str) -> None:
    row = conn.execute(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (gateway_role,)
    ).fetchone()
    if row is None:
        raise ConfigError(
            f"the gateway database role {gateway_role!r} does not exist",
            f"CREATE ROLE {gateway_role} LOGIN PASSWORD '...' before migrating",
        )
    if row[0]:
        raise ConfigError(
            f"the gateway database role {gateway_role!r} is a superuser "
            "and could rewrite the ledger",
            "use an ordinary login role for the gateway",
        )
    # The owner of the schema may DROP any table in it, ledger included.
    owner = conn.execute(
        """SELECT CASE WHEN n.nspowner = 'pg_database_owner'::regrole
                       THEN d.datdba ELSE n.nspowner END::regrole::text
             FROM pg_namespace n, pg_database d
            WHERE n.nspname = 'public' AND d.datname = current_database()"""
    ).fetchone()
    if owner is not None and owner[0].strip('"') == gateway_role:
        raise ConfigError(
            f"the gateway role {gateway_role!r} owns the gateway database's public schema, "
            "so it could drop the ledger",
            "create the gateway database owned by the superuser, not by the gateway role",
        )
