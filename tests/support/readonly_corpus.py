"""Statements that write, hidden from a label: the corpus PostgreSQL must refuse unapproved.

Each one is run WITHOUT an approval under a ``required_for: writes`` rule; the database must
refuse it (read-only transaction, privileges), leave every table unchanged and the gateway must
record the refusal with PostgreSQL's SQLSTATE. The same statements, approved, run (where they
can run at all: ``approved_runs``). Reused by the label's tests: the label must never call
"read" a statement of this corpus.

``objects(suffix)`` is what a DBA creates first, as the superuser: two tables owned by the
writer group, functions that write (plain, plpgsql, SECURITY DEFINER owned by the superuser
and executable by PUBLIC, names with ``$``, quoted names, names that shadow built-ins with
another signature), a view that writes when read, a procedure and a sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: write in a read-only transaction; a privilege the user lacks; SET TRANSACTION READ WRITE
#: after the first query (or inside a read-only transaction); prepared transactions disabled.
READ_ONLY = "25006"
PRIVILEGE = "42501"
ACTIVE_TX = "25001"
PREPARED_DISABLED = "55000"


@dataclass(frozen=True)
class Attack:
    """One hidden write; ``sql`` has ``{t}`` (a table), ``{a}`` (another), ``{x}`` (suffix)."""

    name: str
    sql: str
    #: The SQLSTATEs with which PostgreSQL may refuse it unapproved.
    refused: frozenset[str] = frozenset({READ_ONLY})
    #: Does it run once approved (as the writer, read-write)?
    approved_runs: bool = True

    def render(self, suffix: str) -> str:
        return self.sql.format(t=f"ro_t_{suffix}", a=f"ro_a_{suffix}", x=suffix)


def _a(name: str, sql: str, *refused: str, approved_runs: bool = True) -> Attack:
    return Attack(name, sql, frozenset(refused or {READ_ONLY}), approved_runs)


CORPUS: list[Attack] = [
    # -- functions, views, procedures: the write is out of the statement's sight -------------
    _a("sql function", "SELECT ro_ins_{x}()"),
    _a("plpgsql function", "SELECT ro_upd_{x}()"),
    _a("function in WHERE", "SELECT 1 FROM {t} WHERE ro_ins_{x}() > 0"),
    _a("function in a subquery", "SELECT (SELECT ro_ins_{x}())"),
    _a("function in VALUES", "VALUES (ro_ins_{x}())"),
    _a("function in ORDER BY", "SELECT id FROM {t} ORDER BY ro_ins_{x}()"),
    _a("function in a lateral join", "SELECT * FROM {t}, LATERAL (SELECT ro_ins_{x}()) f"),
    _a("set-returning writer", "SELECT * FROM ro_srf_{x}()"),
    _a("view that writes when read", "SELECT * FROM ro_view_{x}"),
    _a("TABLE of a writing view", "TABLE ro_view_{x}"),
    _a("security definer, PUBLIC may execute", "SELECT ro_definer_{x}()"),
    _a("procedure", "CALL ro_proc_{x}()"),
    _a("DO block", "DO $$BEGIN INSERT INTO {t} VALUES (900, 'do'); END$$"),
    # Alone and with autocommit the gateway sends no query before them (read_only.py): the
    # snapshot their own execution takes must make PostgreSQL refuse the READ WRITE they ask.
    # (Approved, they fail too: the snapshot comes first in a read-write transaction as well.)
    _a(
        "procedure asking for READ WRITE",
        "CALL ro_rwproc_{x}()",
        ACTIVE_TX,
        READ_ONLY,
        approved_runs=False,
    ),
    _a(
        "DO block asking for READ WRITE",
        "DO $$BEGIN SET TRANSACTION READ WRITE; INSERT INTO {t} VALUES (910, 'rw'); END$$",
        ACTIVE_TX,
        READ_ONLY,
        approved_runs=False,
    ),
    # -- shadowed names: a built-in's name with another signature ---------------------------
    _a("shadowed upper(int)", "SELECT upper(7)"),
    _a("shadowed schema-qualified lower(int)", "SELECT public.lower(8)"),
    _a("shadowed length(int) in WHERE", "SELECT 1 WHERE length(9) IS NOT NULL"),
    # -- quoting, $ in identifiers, comments, dollar quotes --------------------------------
    _a("$ in a function name", "SELECT ro$ins_{x}()"),
    _a("quoted function name", 'SELECT "ro_ins_{x}"()'),
    _a("quoted name that reads like SELECT", 'SELECT "Select_{x}"()'),
    _a("comment before the write", "/* SELECT */ INSERT INTO {t} VALUES (901, 'c')"),
    _a("line comment hides nothing", "SELECT 1 -- ;\n; INSERT INTO {t} VALUES (902, 'c')"),
    _a("nested comment", "SELECT /* /* ; */ */ ro_ins_{x}()"),
    _a("dollar quote then write", "SELECT $$ ; $$; DELETE FROM {t}"),
    _a("tagged dollar quote", "SELECT $q$ '; $q$ AS s; UPDATE {t} SET v = 'tag'"),
    _a("string with quote then write", "SELECT 'a'';x'; DELETE FROM {a}"),
    _a("E-string escape then write", "SELECT E'\\';'; UPDATE {a} SET v = 'e'"),
    # -- plain writes (a label that says "read" for everything) -----------------------------
    _a("insert", "INSERT INTO {t} VALUES (903, 'i')"),
    _a("update", "UPDATE {t} SET v = 'u'"),
    _a("delete", "DELETE FROM {a}"),
    _a("writing CTE", "WITH w AS (DELETE FROM {t} RETURNING *) SELECT count(*) FROM w"),
    _a("SELECT INTO", "SELECT * INTO ro_into_{x} FROM {t}"),
    _a("CREATE TABLE AS", "CREATE TABLE ro_ctas_{x} AS SELECT 1"),
    _a("CREATE TEMP TABLE", "CREATE TEMP TABLE ro_tmp_{x} AS SELECT * FROM {t}"),
    _a("EXPLAIN ANALYZE", "EXPLAIN ANALYZE INSERT INTO {t} VALUES (904, 'e')"),
    _a("TRUNCATE", "TRUNCATE {a}"),
    _a("SELECT FOR UPDATE", "SELECT * FROM {t} FOR UPDATE", READ_ONLY, PRIVILEGE),
    _a("nextval", "SELECT nextval('ro_seq_{x}')", READ_ONLY, PRIVILEGE),
    _a("setval", "SELECT setval('ro_seq_{x}', 99)", READ_ONLY, PRIVILEGE),
    # PostgreSQL 15 allows it in a read-only transaction: EXECUTE is the writer's only.
    _a("large object created", "SELECT lo_from_bytea(0, 'x')", READ_ONLY, PRIVILEGE),
    _a("large object created (lo_create)", "SELECT lo_create(0)", READ_ONLY, PRIVILEGE),
    # -- transaction control: leave the gateway's read-only transaction --------------------
    _a("COMMIT; write", "COMMIT; INSERT INTO {t} VALUES (905, 'c')"),
    _a("ROLLBACK; write", "ROLLBACK; INSERT INTO {t} VALUES (906, 'r')"),
    _a("END; write", "END; DELETE FROM {t}"),
    _a("ABORT; write", "ABORT; DELETE FROM {t}"),
    _a(
        "COMMIT AND CHAIN; read-write",
        "COMMIT AND CHAIN; SET TRANSACTION READ WRITE; INSERT INTO {t} VALUES (907, 'k')",
        approved_runs=False,  # outside an explicit transaction block it is an error
    ),
    _a(
        "SET TRANSACTION READ WRITE first",
        "SET TRANSACTION READ WRITE; INSERT INTO {t} VALUES (908, 's')",
        ACTIVE_TX,
    ),
    _a(
        "BEGIN; SET TRANSACTION READ WRITE",
        "BEGIN; SET TRANSACTION READ WRITE; DELETE FROM {t}",
        ACTIVE_TX,
    ),
    _a(
        "savepoint; SET TRANSACTION READ WRITE",
        "SAVEPOINT s; SET TRANSACTION READ WRITE; DELETE FROM {t}",
        ACTIVE_TX,
        approved_runs=False,  # outside an explicit transaction block it is an error
    ),
    _a(
        "RESET transaction_read_only",
        "RESET transaction_read_only; DELETE FROM {t}",
        ACTIVE_TX,
        READ_ONLY,
    ),
    _a(
        "SET transaction_read_only = off",
        "SET transaction_read_only = off; DELETE FROM {t}",
        ACTIVE_TX,
    ),
    _a(
        "PREPARE TRANSACTION; write",
        "PREPARE TRANSACTION 'ro_{x}'; DELETE FROM {t}",
        PREPARED_DISABLED,
        approved_runs=False,
    ),
    # -- session settings and roles ---------------------------------------------------------
    _a(
        "SET default_transaction_read_only",
        "SET default_transaction_read_only = off; DELETE FROM {t}",
    ),
    _a(
        "SET SESSION CHARACTERISTICS",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DELETE FROM {t}",
    ),
    _a("RESET ALL; write", "RESET ALL; DELETE FROM {t}"),
    _a("DISCARD ALL; write", "DISCARD ALL; DELETE FROM {t}", ACTIVE_TX, approved_runs=False),
    _a("SET ROLE to the writer group", "SET ROLE warehouse_writer; DELETE FROM {t}", PRIVILEGE),
    _a(
        "RESET ROLE; write",
        "RESET ROLE; DELETE FROM {t}",
        READ_ONLY,
        PRIVILEGE,
        approved_runs=False,
    ),
    _a(
        "SET SESSION AUTHORIZATION",
        "SET SESSION AUTHORIZATION bao_admin; DELETE FROM {t}",
        PRIVILEGE,
        approved_runs=False,
    ),
    # -- reaching outside the database -------------------------------------------------------
    _a(
        "COPY TO PROGRAM",
        "COPY (SELECT 1) TO PROGRAM 'touch /tmp/ro_{x}'",
        READ_ONLY,
        PRIVILEGE,
        approved_runs=False,
    ),
    _a("pg_read_file", "SELECT pg_read_file('/etc/hostname')", PRIVILEGE, approved_runs=False),
    _a(
        "server-side lo_import",
        "SELECT lo_import('/etc/hostname')",
        READ_ONLY,
        PRIVILEGE,
        approved_runs=False,
    ),
]


def objects(suffix: str) -> list[str]:
    """What a DBA creates as the superuser before the corpus runs (grants included)."""
    t, a, x = f"ro_t_{suffix}", f"ro_a_{suffix}", suffix
    writer = "warehouse_writer"
    ins = f"INSERT INTO {t} (id, v) SELECT coalesce(max(id), 0) + 1, 'w' FROM {t}"
    return [
        f"CREATE TABLE {t} (id int, v text)",
        f"CREATE TABLE {a} (id int, v text)",
        f"INSERT INTO {t} SELECT g, 'row ' || g FROM generate_series(1, 5) g",
        f"INSERT INTO {a} SELECT g, 'other ' || g FROM generate_series(1, 3) g",
        f"CREATE SEQUENCE ro_seq_{x}",
        f"CREATE FUNCTION ro_ins_{x}() RETURNS int LANGUAGE sql AS $$ {ins} RETURNING 1 $$",
        f"CREATE FUNCTION ro$ins_{x}() RETURNS int LANGUAGE sql AS $$ {ins} RETURNING 1 $$",
        f'CREATE FUNCTION "Select_{x}"() RETURNS int LANGUAGE sql AS $$ {ins} RETURNING 1 $$',
        f"CREATE FUNCTION ro_upd_{x}() RETURNS int LANGUAGE plpgsql AS "
        f"$$BEGIN UPDATE {t} SET v = 'plpgsql'; RETURN 1; END$$",
        f"CREATE FUNCTION ro_srf_{x}() RETURNS SETOF int LANGUAGE sql AS "
        f"$$ DELETE FROM {a} RETURNING id $$",
        f"CREATE VIEW ro_view_{x} AS SELECT ro_ins_{x}() AS n",
        f"CREATE PROCEDURE ro_proc_{x}() LANGUAGE sql AS $$ DELETE FROM {t} $$",
        f"CREATE PROCEDURE ro_rwproc_{x}() LANGUAGE plpgsql AS "
        f"$$BEGIN SET TRANSACTION READ WRITE; DELETE FROM {t}; END$$",
        f"CREATE OR REPLACE FUNCTION public.upper(int) RETURNS text LANGUAGE sql AS "
        f"$$ {ins} RETURNING 'up' $$",
        f"CREATE OR REPLACE FUNCTION public.lower(int) RETURNS text LANGUAGE sql AS "
        f"$$ {ins} RETURNING 'low' $$",
        f"CREATE OR REPLACE FUNCTION public.length(int) RETURNS int LANGUAGE sql AS "
        f"$$ {ins} RETURNING 1 $$",
        # SECURITY DEFINER, owned by the superuser, and PUBLIC may execute it (the default):
        # whoever calls it writes as the superuser, except in a read-only transaction.
        f"CREATE FUNCTION ro_definer_{x}() RETURNS int LANGUAGE sql SECURITY DEFINER "
        f"SET search_path = public AS $$ DELETE FROM {a} RETURNING 1 $$",
        # The writer group owns the tables (approved commands write them); the reader group
        # got SELECT on them by the superuser's default privileges.
        f"ALTER TABLE {t} OWNER TO {writer}",
        f"ALTER TABLE {a} OWNER TO {writer}",
        f"ALTER SEQUENCE ro_seq_{x} OWNER TO {writer}",
        f"ALTER VIEW ro_view_{x} OWNER TO {writer}",
        f"ALTER FUNCTION ro_ins_{x}() OWNER TO {writer}",
        f"ALTER FUNCTION ro$ins_{x}() OWNER TO {writer}",
        f'ALTER FUNCTION "Select_{x}"() OWNER TO {writer}',
        f"ALTER FUNCTION ro_upd_{x}() OWNER TO {writer}",
        f"ALTER FUNCTION ro_srf_{x}() OWNER TO {writer}",
        f"ALTER PROCEDURE ro_proc_{x}() OWNER TO {writer}",
        f"ALTER PROCEDURE ro_rwproc_{x}() OWNER TO {writer}",
    ]


def drop(suffix: str) -> list[str]:
    """Undo ``objects`` (and what approved statements created)."""
    x = suffix
    return [
        f"DROP VIEW IF EXISTS ro_view_{x}",
        f"DROP TABLE IF EXISTS ro_t_{x}, ro_a_{x}, ro_into_{x}, ro_ctas_{x}",
        f"DROP SEQUENCE IF EXISTS ro_seq_{x}",
        f'DROP FUNCTION IF EXISTS ro_ins_{x}(), ro$ins_{x}(), "Select_{x}"(), ro_upd_{x}(), '
        f"ro_srf_{x}(), ro_definer_{x}()",
        f"DROP PROCEDURE IF EXISTS ro_proc_{x}(), ro_rwproc_{x}()",
        "DROP FUNCTION IF EXISTS public.upper(int), public.lower(int), public.length(int)",
    ]


def checksums(conn: Any, suffix: str) -> dict[str, Any]:
    """What must not change: both tables' rows, the sequence, large objects, new tables."""
    t, a, x = f"ro_t_{suffix}", f"ro_a_{suffix}", suffix
    row = conn.execute(
        f"SELECT (SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {t} t), "
        f"(SELECT md5(coalesce(string_agg(a::text, ',' ORDER BY a::text), '')) FROM {a} a), "
        f"(SELECT last_value || ':' || is_called FROM ro_seq_{x}), "
        "(SELECT count(*) FROM pg_largeobject_metadata), "
        f"(SELECT count(*) FROM pg_class WHERE relname IN ('ro_into_{x}', 'ro_ctas_{x}')), "
        "(SELECT count(*) FROM pg_prepared_xacts)"
    ).fetchone()
    keys = ("table", "other table", "sequence", "large objects", "new tables", "prepared")
    return dict(zip(keys, row, strict=True))
