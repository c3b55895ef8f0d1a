"""Reading hoop's psql text output back into rows (airflow_hoop.client.hoop_text).

The outputs below are what psql 15 printed under hoop's command line (``-v ON_ERROR_STOP=1 -A
-F<tab> -P pager=off``, stdout and stderr on one pipe) for the script shown next to each; the
recorded ones are re-checked against real psql in tests/integration/test_hoop_contract.py.
"""

from __future__ import annotations

import pytest
from support.hoop_contract.replay import Recording

from airflow_hoop.client.hoop_text import HoopTextError, error_text, parse_psql_output


def _recorded(name: str) -> tuple[str, str]:
    exchange = Recording.load(name).exchanges[0]
    assert exchange.psql_script is not None
    return exchange.psql_script, exchange.response.json_body["output"]


def test_select_with_null_bool_and_numeric() -> None:
    script, output = _recorded("exec_select")
    parsed = parse_psql_output(output, script)
    assert len(parsed.statements) == 1 and parsed.messages == []
    last = parsed.last
    assert last is not None
    assert last.columns == ["n", "missing", "s", "flag", "d"]
    assert last.rows == [["1", None, "a b", "t", "2.50"]]
    assert (last.rowcount, last.status_message) == (1, None)


def test_error_stops_the_script_and_keeps_its_detail_lines() -> None:
    script, output = _recorded("exec_sql_error")
    parsed = parse_psql_output(output, script)
    assert [s.rows for s in parsed.statements] == [[["1"]]]
    assert parsed.error is not None
    assert parsed.error.message == 'relation "contract_missing_table" does not exist'
    assert parsed.error.detail[0] == "LINE 1: SELECT * FROM contract_missing_table;"
    assert parsed.error.detail[1].strip() == "^"
    assert error_text(output) == parsed.error.text


# script: CREATE TABLE t(id int, v text); INSERT ... (1,'x'),(2,NULL),(3,''); SELECT * FROM t;
# DROP TABLE IF EXISTS nope; BEGIN; COMMIT; COMMIT; CREATE TEMP TABLE a AS SELECT ...;
NOTICES = (
    "CREATE TABLE\nINSERT 0 3\nid\tv\n1\tx\n2\t\n3\t\n(3 rows)\n"
    'NOTICE:  table "nope" does not exist, skipping\nDROP TABLE\nBEGIN\nCOMMIT\n'
    "WARNING:  there is no transaction in progress\nCOMMIT\nSELECT 2\n"
)


def test_command_tags_notices_and_null_or_empty() -> None:
    parsed = parse_psql_output(NOTICES)
    tags = [s.status_message for s in parsed.statements if s.columns is None]
    assert tags == ["CREATE TABLE", "INSERT 0 3", "DROP TABLE", "BEGIN", "COMMIT", "COMMIT", "SELECT 2"]  # fmt: skip
    counts = [s.rowcount for s in parsed.statements if s.columns is None]
    assert counts == [-1, 3, -1, -1, -1, -1, 2]
    rows = next(s.rows for s in parsed.statements if s.columns)
    assert rows == [["1", "x"], ["2", None], ["3", None]]  # NULL and '' both read as None
    assert [(m.severity, m.message) for m in parsed.messages] == [
        ("NOTICE", 'table "nope" does not exist, skipping'),
        ("WARNING", "there is no transaction in progress"),
    ]
    assert parsed.error is None


def test_returning_rows_and_their_tag_are_one_statement_only_with_returning() -> None:
    output = "id\tv\n4\tz\n(1 row)\nINSERT 0 1\n"
    returning = parse_psql_output(output, "INSERT INTO t VALUES (4, 'z') RETURNING id, v")
    assert len(returning.statements) == 1
    assert returning.statements[0].status_message == "INSERT 0 1"
    # Same text from "SELECT ...; INSERT ...": two statements, the last has no rows.
    two = parse_psql_output(output, "SELECT 4 AS id, 'z' AS v; INSERT INTO t VALUES (5, 'q')")
    assert [s.columns for s in two.statements] == [["id", "v"], None]


def test_headers_and_values_that_look_like_tags_notices_or_footers() -> None:
    # SELECT 1 AS "NOTICE:  x"; SELECT 1 AS "INSERT 0 1"; SELECT '(1 row)' AS x;
    output = "NOTICE:  x\n1\n(1 row)\nINSERT 0 1\n1\n(1 row)\nx\n(1 row)\n(1 row)\n"
    parsed = parse_psql_output(output)
    assert [(s.columns, s.rows) for s in parsed.statements] == [
        (["NOTICE:  x"], [["1"]]),
        (["INSERT 0 1"], [["1"]]),
        (["x"], [["(1 row)"]]),
    ]
    assert parsed.messages == []


def test_zero_column_results() -> None:
    # SELECT FROM generate_series(1,3); SELECT 1 AS x; SELECT FROM generate_series(1,0);
    parsed = parse_psql_output("\n(3 rows)\nx\n1\n(1 row)\n\n(0 rows)\n")
    assert [(s.columns, s.rows) for s in parsed.statements] == [
        ([], [[], [], []]),
        (["x"], [["1"]]),
        ([], []),
    ]


def test_a_tag_before_a_zero_column_row_is_ambiguous_and_refused() -> None:
    # COMMIT; SELECT;  -- or a column named COMMIT holding NULL: the text is the same.
    with pytest.raises(HoopTextError, match="read both as a result set"):
        parse_psql_output("COMMIT\n\n(1 row)\n")


@pytest.mark.parametrize(
    ("output", "needle"),
    [
        ("x\na\tb\n(1 row)\n", "has 2 fields"),  # SELECT E'a\tb' AS x
        ("x\na\nb\n(1 row)\n", "line 1"),  # SELECT E'a\nb' AS x: the footer does not add up
        # SELECT E'a\tb' AS tab, E'c\nd' AS nl, '(1 row)' AS f: the first line has the right
        # number of fields; only the footer's count shows the row was split.
        ("tab\tnl\tf\na\tb\tc\nd\t(1 row)\n(1 row)\n", "line 1"),
        ("1\ta\nSELECT 1\n", "line 1"),  # COPY ... TO STDOUT prints raw data lines
    ],
)
def test_values_with_tabs_or_line_breaks_are_refused_not_guessed(output: str, needle: str) -> None:
    with pytest.raises(HoopTextError, match=needle) as caught:
        parse_psql_output(output)
    assert "Fix:" in str(caught.value)


def test_psql_location_prefix_and_psqls_own_errors() -> None:
    prefixed = parse_psql_output("psql:/tmp/x.sql:2: ERROR:  division by zero\n")
    assert prefixed.error is not None and prefixed.error.message == "division by zero"
    own = parse_psql_output('psql: error: connection to server at "db" (10.0.0.1), port 5432 failed\n')  # fmt: skip
    assert own.error is not None and own.error.severity == "ERROR"


def test_everything_after_an_error_belongs_to_it() -> None:
    # DO $$ ... RAISE NOTICE 'hi'; RAISE EXCEPTION 'boom' USING DETAIL='d', HINT='h' ... $$
    output = (
        "NOTICE:  hi 1\nERROR:  boom\nDETAIL:  d\nHINT:  h\n"
        "CONTEXT:  PL/pgSQL function inline_code_block line 1 at RAISE\n"
    )
    parsed = parse_psql_output(output)
    assert [m.severity for m in parsed.messages] == ["NOTICE", "ERROR"]
    assert parsed.error is not None and parsed.error.detail[0] == "DETAIL:  d"
    assert error_text(output) == (
        "ERROR:  boom\nDETAIL:  d\nHINT:  h\n"
        "CONTEXT:  PL/pgSQL function inline_code_block line 1 at RAISE"
    )


def test_empty_output_and_lenient_error_text() -> None:
    assert parse_psql_output("").statements == []
    assert error_text("no error here\n\tjunk") is None
    assert error_text("ERROR:  our gateway's form\n") == "ERROR:  our gateway's form"
