"""The parser's label at the real gateway: under ``required_for: writes`` a write the old regex
classifier called read-only is refused without an approval, recorded, and the refusal names the
statement and why; each SQL intent record carries its label.

The devstack's warehouse connection has the rule: writes of DAGs ``test_approval*`` need an
approval from ``data-owners``. The writing function is planted by the database's superuser, as
any earlier approved step or administrator could have.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from support.gateway_support import StepClient, ledger_records, session_records, step_client

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.records import PolicyRefused, SessionIntent, StepRef


@pytest.fixture
def planted(stack: StackInfo, admin_conn: Any) -> Iterator[tuple[str, str]]:
    """A table and a function that writes into it, both new: (table, function)."""
    suffix = uuid.uuid4().hex[:10]
    table, function = f"label_t_{suffix}", f"label_w_{suffix}"
    conn = admin_conn()
    conn.execute(f"CREATE TABLE {table} (a int)")
    conn.execute(f"ALTER TABLE {table} OWNER TO warehouse_writer")
    conn.execute(
        f"CREATE FUNCTION public.{function}() RETURNS int LANGUAGE plpgsql "
        f"AS $$BEGIN INSERT INTO {table} VALUES (1); RETURN 1; END$$"
    )
    conn.execute(f"ALTER FUNCTION public.{function}() OWNER TO warehouse_writer")
    yield table, function
    conn.execute(f"DROP FUNCTION public.{function}()")
    conn.execute(f"DROP TABLE {table}")


@pytest.fixture
def gated(stack: StackInfo) -> Iterator[StepClient]:
    """A step of a DAG whose writes need an approval (none is ever requested here)."""
    step = StepRef(dag_id="test_approval_label", task_id="load", run_id=f"manual__{uuid.uuid4()}")
    with step_client(stack, step) as client:
        yield client


def _count(admin_conn: Any, table: str) -> int:
    return int(admin_conn().execute(f"SELECT count(*) FROM {table}").fetchone()[0])


#: Each read-only to the old regexes (literals, identifiers and comments stripped by guesses).
_DISGUISED = [
    "SELECT 1 AS x$$, {f}() AS y$$",  # `$$` inside identifiers read as a dollar quote
    'SELECT "{f}"()',  # a quoted function name read as a quoted identifier
    'SELECT "public"."{f}"()',  # quoted and schema-qualified
]


@pytest.mark.parametrize("template", _DISGUISED)
def test_a_disguised_write_is_refused_without_approval_and_recorded(
    gated: StepClient, planted: tuple[str, str], admin_conn: Any, stack: StackInfo, template: str
) -> None:
    table, function = planted
    script = template.format(f=function)
    refused = gated.exec(script, autocommit=True)
    assert refused.status_code == 403, refused.text
    message = refused.json()["message"]
    assert "no approval was requested for this step" in message
    assert f"calls function {function}()" in message or f"public.{function}()" in message
    assert "which may write" in message and "was labelled a write" in message
    assert _count(admin_conn, table) == 0
    records = [
        r.body
        for r in ledger_records(stack)
        if isinstance(r.body, PolicyRefused) and r.step is not None and r.step.key == gated.step.key
    ]
    assert len(records) == 1, records
    assert "marked because it was labelled a write: calls function" in records[0].reason
    # The statement itself stays out of the refusal record: the script goes by its digest.
    assert records[0].script_sha256 and script not in records[0].reason


def test_an_unparsable_script_is_refused_with_postgresqls_syntax_error(
    gated: StepClient,
) -> None:
    refused = gated.exec("SELECT * FROM WHERE x", autocommit=True)
    assert refused.status_code == 403, refused.text
    message = refused.json()["message"]
    assert 'could not be parsed: syntax error at or near "WHERE" at position 15' in message
    assert "it counts as a write" in message


def test_each_sql_intent_records_its_label(gated: StepClient, stack: StackInfo) -> None:
    labels = {}
    for script in ("SELECT count(*) FROM pg_class", "BEGIN", "COMMIT"):
        response = gated.exec(script)
        assert response.status_code == 200, response.text
        intent = session_records(stack, response.json()["session_id"])[0].body
        assert isinstance(intent, SessionIntent)
        labels[script] = intent.label
    assert labels == {
        "SELECT count(*) FROM pg_class": "read",
        "BEGIN": "transaction_control",
        "COMMIT": "transaction_control",
    }
