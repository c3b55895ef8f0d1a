"""The SQL label against PostgreSQL itself: never ``read`` for a statement the database refuses
in a read-only transaction.

A database of its own on the stack's PostgreSQL holds what a hostile DAG author would plant:
a user ``public.lower(text, int)`` that writes, a function whose name holds a dollar sign, a
quoted mixed-case function, a set-returning writer, a SECURITY DEFINER writer, a user
operator, a domain whose CHECK writes, a procedure, a sequence, a large object call. Every
statement of the corpus runs as a real non-superuser inside ``BEGIN READ ONLY``; for each one
PostgreSQL refuses with SQLSTATE 25006 (read_only_sql_transaction), the label must not be
``read``. What the parser cannot see (a view over a writing function, an allow-listed name
shadowed by a better-matching argument type) is asserted separately: labelled ``read``, and
refused by the database, which is the guarantee (docs/security.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.sql_label import SAFE_FUNCTIONS, label_sql

READ_ONLY_SQL_TRANSACTION = "25006"

_SETUP = """
CREATE TABLE t (a int);
INSERT INTO t VALUES (1);
CREATE SEQUENCE s;
CREATE FUNCTION public.writer() RETURNS int LANGUAGE plpgsql
  AS $$BEGIN INSERT INTO t VALUES (100); RETURN 1; END$$;
CREATE FUNCTION public.lower(text, int) RETURNS text LANGUAGE plpgsql
  AS $$BEGIN INSERT INTO t VALUES ($2); RETURN $1; END$$;
CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE plpgsql
  AS $$BEGIN INSERT INTO t VALUES (101); RETURN $1; END$$;
CREATE FUNCTION public."Lower"(text) RETURNS text LANGUAGE plpgsql
  AS $$BEGIN INSERT INTO t VALUES (102); RETURN $1; END$$;
CREATE FUNCTION public.w$rite(int) RETURNS int LANGUAGE plpgsql
  AS $$BEGIN INSERT INTO t VALUES ($1); RETURN $1; END$$;
CREATE FUNCTION public.srf() RETURNS SETOF int LANGUAGE plpgsql
  AS $$BEGIN INSERT INTO t VALUES (103); RETURN NEXT 1; END$$;
CREATE FUNCTION public.definer() RETURNS int LANGUAGE plpgsql SECURITY DEFINER
  AS $$BEGIN INSERT INTO t VALUES (104); RETURN 1; END$$;
CREATE FUNCTION public.op_writer(int, int) RETURNS bool LANGUAGE plpgsql
  AS $$BEGIN INSERT INTO t VALUES ($1); RETURN true; END$$;
CREATE OPERATOR public.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = public.op_writer);
CREATE FUNCTION public.check_writer(int) RETURNS bool LANGUAGE plpgsql
  AS $$BEGIN INSERT INTO t VALUES ($1); RETURN true; END$$;
CREATE DOMAIN d_writer AS int CHECK (public.check_writer(VALUE));
CREATE PROCEDURE public.p() LANGUAGE plpgsql AS $$BEGIN INSERT INTO t VALUES (105); END$$;
CREATE VIEW v_writer AS SELECT public.writer() AS x;
"""

#: Statements that write, or try to, through every route the unit corpus names.
WRITES = [
    "INSERT INTO t VALUES (9)",
    "UPDATE t SET a = 2",
    "DELETE FROM t",
    "MERGE INTO t USING (VALUES (1)) v(a) ON t.a = v.a WHEN MATCHED THEN DELETE",
    "TRUNCATE t",
    "CREATE TABLE t3 (a int)",
    "SELECT lower('x', 1)",  # the shadowing user function: another signature
    "SELECT \"lower\"('x', 1)",  # ... quoted
    "SELECT public.lower('x', 1)",  # ... schema-qualified
    'SELECT "public"."lower"(\'x\', 1)',
    "SELECT \"Lower\"('x')",  # a quoted mixed-case name
    "SELECT w$rite(7)",  # a dollar sign inside the function's name
    "SELECT 1 AS x$$, writer() AS y$$",  # dollar signs in identifiers the regexes read as quotes
    "SELECT writer()",
    "SELECT public.writer()",
    "SELECT * FROM writer()",
    "SELECT * FROM srf()",
    "SELECT definer()",  # SECURITY DEFINER: runs as its owner, still read-only
    "SELECT 1 === 2",  # a user operator
    "SELECT 1 OPERATOR(public.===) 2",
    "SELECT 1::d_writer",  # a domain's CHECK calls a writing function
    "SELECT nextval('s')",
    "SELECT setval('s', 42)",
    "SELECT lo_create(0)",
    "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
    "WITH x AS (SELECT writer()) SELECT * FROM x",
    "SELECT * INTO t2 FROM t",
    "SELECT * FROM t FOR UPDATE",
    "SELECT * FROM t WHERE a = writer()",
    "SELECT count(*) FROM t GROUP BY a HAVING max(a) < writer()",
    "EXPLAIN ANALYZE DELETE FROM t",
    "EXPLAIN ANALYZE SELECT writer()",
    "CALL p()",
    "DO $$BEGIN INSERT INTO t VALUES (3); END$$",
    "SELECT 1 /* ; */; DELETE FROM t",
    "SELECT $$ ; $$; DELETE FROM t",
    "SELECT e'\\''; DELETE FROM t",
    "SELECT 1 /* /* */ */; DELETE FROM t",
    "SELECT 1; INSERT INTO t VALUES (5)",
    "LOCK TABLE t",
    "VALUES (writer())",
    "SELECT (SELECT writer())",
]
#: Reads: labelled read, and they run in a read-only transaction.
READS = [
    "SELECT count(*) FROM t",
    "SELECT lower('X'), upper('x'), pg_catalog.lower('Y')",
    "TABLE t",
    "VALUES (1)",
    "SHOW search_path",
    "EXPLAIN SELECT * FROM t",
    "SELECT 42, count(*) FROM generate_series(1, 20) AS g WHERE g % 3 = 0",
]
#: What only the catalog knows: the parser labels these read; the database refuses them.
CATALOG_ONLY = [
    "SELECT * FROM v_writer",  # a view over a writing function
    "SELECT lower('x'::varchar)",  # lower(varchar) beats pg_catalog.lower(text) on its type
]


@pytest.fixture(scope="module")
def label_db(stack: StackInfo) -> Iterator[tuple[str, str]]:
    """A database of its own with the hostile objects, and a plain login role (no superuser)."""
    db, role = f"label_{uuid.uuid4().hex[:8]}", f"label_user_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    with psycopg.connect(stack.admin_dsn(db), autocommit=True) as conn:
        conn.execute(_SETUP)  # no parameters: one simple-protocol script
        conn.execute(
            sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {0}").format(sql.Identifier(role))
        )
        conn.execute(sql.SQL("GRANT ALL ON SEQUENCE s TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        yield db, role
    finally:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        admin.close()


@pytest.fixture
def run_read_only(
    stack: StackInfo, label_db: tuple[str, str]
) -> Iterator[Callable[[str], str | None]]:
    """Runs one statement as the plain role inside BEGIN READ ONLY; its SQLSTATE, or None."""
    db, role = label_db
    dsn = f"host={stack.pg_socket_dir} port={stack.pg_port} user={role} dbname={db}"
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET statement_timeout = '5s'")

    def run(statement: str) -> str | None:
        conn.execute("BEGIN READ ONLY")
        try:
            conn.execute(statement)  # type: ignore[arg-type]  # the corpus is SQL text
            return None
        except psycopg.Error as exc:
            return exc.sqlstate or "?"
        finally:
            conn.execute("ROLLBACK")

    yield run
    conn.close()


def test_never_read_for_a_statement_the_database_refuses_as_a_write(run_read_only: Any) -> None:
    outcomes = {statement: run_read_only(statement) for statement in WRITES}
    refused = [s for s, state in outcomes.items() if state == READ_ONLY_SQL_TRANSACTION]
    labelled_read = [s for s in refused if label_sql(s).label == "read"]
    assert labelled_read == [], f"labelled read, refused by PostgreSQL as a write: {labelled_read}"
    # The corpus really writes: PostgreSQL refused most of it as a write (not some other error).
    assert len(refused) >= 30, {s: state for s, state in outcomes.items() if s not in refused}
    assert all(label_sql(s).label == "write" for s in WRITES)


def test_plain_reads_are_read_and_run_read_only(run_read_only: Any) -> None:
    for statement in READS:
        assert label_sql(statement).label == "read", statement
        assert run_read_only(statement) is None, statement


def test_what_only_the_catalog_knows_is_read_for_the_parser_and_refused_by_the_database(
    run_read_only: Any,
) -> None:
    """The label's documented blind spot: the read-only transaction is what stops these."""
    for statement in CATALOG_ONLY:
        assert label_sql(statement).label == "read", statement
        assert run_read_only(statement) == READ_ONLY_SQL_TRANSACTION, statement


def test_the_allow_list_names_argument_counts_that_pg_catalog_really_has(
    stack: StackInfo, admin_conn: Any
) -> None:
    """An arity on SAFE_FUNCTIONS that no pg_catalog function takes would label a user
    function's call read; every one must be served by a built-in of that name."""
    rows = admin_conn().execute(
        "SELECT proname, pronargs - pronargdefaults, pronargs, provariadic <> 0"
        " FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace"
        " AND proname = ANY(%s)",
        [list(SAFE_FUNCTIONS)],
    )
    served: dict[str, set[int]] = {}
    variadic: set[str] = set()
    for name, least, most, is_variadic in rows:
        # a variadic function takes any count from its fixed arguments on
        served.setdefault(name, set()).update(range(least, 100 if is_variadic else most + 1))
        if is_variadic:
            variadic.add(name)
    missing = {name for name in SAFE_FUNCTIONS if name not in served}
    assert missing == set(), f"not in pg_catalog: {missing}"
    for name, arities in SAFE_FUNCTIONS.items():
        if arities is None:
            assert name in variadic or name == "unnest", name
        else:
            assert arities <= served[name], (name, arities, served[name])
