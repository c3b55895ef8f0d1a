"""Roles and databases of the embedded stack, created as the superuser over the unix socket.

- ``bao_admin``: the account OpenBao's database engine uses to create and drop step users.
- ``warehouse_writer``: a NOLOGIN group that owns every table the steps create, so that a
  step's user can be dropped on revoke and the next step's user can use its tables.
- ``warehouse_reader``: a NOLOGIN group with SELECT on the warehouse's tables and views and
  USAGE on its schema, nothing else: the group of the step's READ user, which runs unapproved
  commands under a ``required_for: writes`` rule.
Neither group (nor any step user) is a member of ``pg_execute_server_program``,
``pg_read_server_files`` or ``pg_write_server_files``, nor has CREATEROLE, CREATEDB or
superuser: nothing a step runs reaches outside the database.
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
WAREHOUSE_READER = "warehouse_reader"
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
        grant_reader(conn)
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
        sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(WAREHOUSE_READER)),
        sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(
            ident(WAREHOUSE_READER), ident(BAO_ADMIN)
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


#: Functions that create a large object (the server-side ``lo_import`` is superuser-only).
_LARGE_OBJECT_CREATORS = (
    "pg_catalog.lo_create(oid)",
    "pg_catalog.lo_creat(integer)",
    "pg_catalog.lo_from_bytea(oid, bytea)",
)


def grant_reader(conn: psycopg.Connection) -> None:
    """The reader group's rights in the warehouse: read what is there and what comes.

    Default privileges for the writer group (tables steps create) and for the superuser (tables
    a DBA creates, kept when they are given to the writer group with ALTER ... OWNER TO).
    """
    reader = sql.Identifier(WAREHOUSE_READER)
    # PostgreSQL 15 lets a read-only transaction create large objects: only the writer may.
    for function in _LARGE_OBJECT_CREATORS:
        conn.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC").format(sql.SQL(function)))
        conn.execute(
            sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                sql.SQL(function), sql.Identifier(WAREHOUSE_WRITER)
            )
        )
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(reader))
    conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(reader))
    for owner in (WAREHOUSE_WRITER, SUPERUSER):
        conn.execute(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT ON TABLES TO {}"
            ).format(sql.Identifier(owner), reader)
        )


def migrate_gateway_store(conn: psycopg.Connection) -> None:
    """Create the gateway's tables and grants (the ledger among them) in its database."""
    # Imported here: the devstack must stay importable without pulling in the gateway service.
    from airflow_hoop.gateway.db.schema import migrate

    migrate(conn, gateway_role=GATEWAY_ROLE)
