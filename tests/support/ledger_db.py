"""A gateway database of a test's own (same Postgres, same Vault), and what a database
administrator can do to it."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from airflow_hoop.devstack import vault_setup
from airflow_hoop.devstack.database_setup import GATEWAY_ROLE
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.gateway.db.schema import migrate
from support.gateway_support import gateway_dsn


@contextlib.contextmanager
def unlocked(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """What a database administrator can do: lift the append-only trigger, change, restore."""
    with conn.transaction():
        conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_no_update_delete")
        yield conn
        conn.execute("ALTER TABLE ledger ENABLE ALWAYS TRIGGER ledger_no_update_delete")


def fresh_gateway_db(stack: StackInfo, prefix: str) -> tuple[str, str]:
    """A new, migrated gateway database; returns its name and the gateway role's DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.admin_dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(name), sql.Identifier(GATEWAY_ROLE)
            )
        )
    with psycopg.connect(stack.admin_dsn(name), autocommit=True) as conn:
        migrate(conn, GATEWAY_ROLE)
    dsn = gateway_dsn(stack).replace(f"dbname={stack.gateway_db}", f"dbname={name}")
    return name, dsn


def drop_db(stack: StackInfo, name: str) -> None:
    with psycopg.connect(stack.admin_dsn("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def vault_key_file(stack: StackInfo, path: Path) -> Path:
    """The public key as a reviewer fetches it from Vault (not from the gateway)."""
    client = vault_setup.vault_client(stack.bao_addr, stack.bao_root_token)
    try:
        resp = client.secrets.transit.read_key(
            name=vault_setup.CHECKPOINT_KEY, mount_point=vault_setup.TRANSIT_MOUNT
        )
    finally:
        client.adapter.close()
    path.write_text(json.dumps({"data": resp["data"]}))
    return path
