"""Roles and databases of the embedded stack, created as the superuser over the unix socket.

- ``bao_admin``: the account OpenBao's database engine uses to create and drop step users.
- ``warehouse_writer``: a NOLOGIN group that owns every table the steps create, so that a
  step's user can be dropped on revoke and the next step's user can use its tables.
- ``warehouse``: the target database that governed steps reach through the gateway.
- ``hoop_gateway`` (role and database): the gateway's own store, ledger included.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from airflow_hoop.devstack.postgres import SUPERUSER

BAO_ADMIN = "bao_admin"
WAREHOUSE_WRITER = "warehouse_writer"
GATEWAY_ROLE = "hoop_gateway"


@dataclass(frozen=True)
class DatabasePasswords:
    """Dev-only passwords of the two login roles created here. Never print them."""

    bao_admin: str
    gateway: str


def admin_connect(socket_dir: Path | str, port: int, dbname: str) -> psycopg.Connection:
    """An autocommit superuser connection over the unix socket (trust auth, throwaway stack)."""
    return psycopg.connect(
        host=str(socket_dir), port=port, user=SUPERUSER, dbname=dbname, autocommit=True
    )


def _new_password() -> str:
    # Hex only: no quoting needed in DSNs, YAML or SQL literals.
    return secrets.token_hex(24)


def create_roles_and_databases(
    socket_dir: Path | str,
    port: int,
    *,
    warehouse_db: str = "warehouse",
    gateway_db: str = "hoop_gateway",
) -> DatabasePasswords:
    """Create the roles and both databases, then the gateway's schema (``store.migrate``)."""
    passwords = DatabasePasswords(bao_admin=_new_password(), gateway=_new_password())
    with admin_connect(socket_dir, port, "postgres") as conn:
        _create_cluster_objects(conn, passwords, warehouse_db, gateway_db)
    with admin_connect(socket_dir, port, warehouse_db) as conn:
        conn.execute(
            sql.SQL("GRANT CREATE, USAGE ON SCHEMA public TO {}").format(
                sql.Identifier(WAREHOUSE_WRITER)
            )
        )
    with admin_connect(socket_dir, port, gateway_db) as conn:
        migrate_gateway_store(conn)
    return passwords


def _create_cluster_objects(
    conn: psycopg.Connection, passwords: DatabasePasswords, warehouse_db: str, gateway_db: str
) -> None:
    ident = sql.Identifier
    statements = [
        # CREATEROLE to create and drop step users; pg_signal_backend so that revocation can
        # end a step user's open sessions before dropping it.
        sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
            ident(BAO_ADMIN), sql.Literal(passwords.bao_admin)
        ),
        sql.SQL("GRANT pg_signal_backend TO {}").format(ident(BAO_ADMIN)),
        sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(WAREHOUSE_WRITER)),
        # On PG15 CREATEROLE alone may grant membership in any non-superuser role; PG16 and
        # later require ADMIN OPTION. Granting it keeps the stack working on both.
        sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(
            ident(WAREHOUSE_WRITER), ident(BAO_ADMIN)
        ),
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            ident(GATEWAY_ROLE), sql.Literal(passwords.gateway)
        ),
        sql.SQL("CREATE DATABASE {}").format(ident(warehouse_db)),
        sql.SQL("CREATE DATABASE {} OWNER {}").format(ident(gateway_db), ident(SUPERUSER)),
        # Step users must not even connect to the gateway's database.
        sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(ident(gateway_db)),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            ident(gateway_db), ident(GATEWAY_ROLE)
        ),
    ]
    for statement in statements:
        conn.execute(statement)


def migrate_gateway_store(conn: psycopg.Connection) -> None:
    """Create the gateway's tables and grants (the ledger among them) in its database."""
    # Imported here: the devstack must stay importable without pulling in the gateway service.
    from airflow_hoop.gateway.db.schema import migrate

    migrate(conn, gateway_role=GATEWAY_ROLE)
