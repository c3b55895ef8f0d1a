"""The conservative read-only classifier behind ``required_for: writes`` (pure function)."""

from __future__ import annotations

import pytest

from airflow_hoop.gateway.execution.readonly import is_read_only, is_transaction_control

READ_ONLY = [
    "SELECT 1",
    "select count(*) from orders where id in (select id from x)",
    "SELECT * FROM (SELECT 1) s JOIN y ON (a = b)",
    "EXPLAIN SELECT 1",
    "SHOW search_path",
    "SELECT 'DELETE FROM t'",  # a keyword inside a string literal
    'SELECT "insert(" FROM t',  # ... or a quoted identifier
    "SELECT $$DROP TABLE t$$",  # ... or a dollar-quoted body
    "-- DELETE\nSELECT 1 /* UPDATE */",
    "SELECT ordered_on, sum(amount) FROM orders GROUP BY ordered_on ORDER BY 1",
]
WRITES = [
    "INSERT INTO t VALUES (1)",
    "UPDATE t SET a = 1",
    "EXPLAIN ANALYZE DELETE FROM t",  # runs the statement
    "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
    "SELECT * INTO new_t FROM t",
    "SELECT * FROM t FOR UPDATE",
    "SELECT nextval('s')",
    "SELECT pg_terminate_backend(42)",
    "SELECT my_function(1)",  # unknown functions may write
    "SELECT 1; DROP TABLE t",
    "select e'\\'' ; delete from t",  # backslash escapes: not guessed
    "SELECT 1 /* /* */ */; DELETE FROM t",  # nested comments: not guessed
    "SELECT 'unterminated",
    "COPY t TO STDOUT",
    "SET search_path TO evil",
    "",
]


@pytest.mark.parametrize("sql", READ_ONLY)
def test_plain_reads_are_read_only(sql):
    assert is_read_only(sql)


@pytest.mark.parametrize("sql", WRITES)
def test_anything_else_is_a_write(sql):
    assert not is_read_only(sql)


@pytest.mark.parametrize("sql", ["COMMIT", "rollback;", "BEGIN", "START TRANSACTION", "END"])
def test_transaction_control(sql):
    assert is_transaction_control(sql)


@pytest.mark.parametrize("sql", ["ROLLBACK TO SAVEPOINT a", "COMMIT PREPARED 'x'", "SELECT 1"])
def test_not_plain_transaction_control(sql):
    assert not is_transaction_control(sql)
