"""The correlation marks a statement carries into the database (ledger/correlation.py).

The attacker is a DAG author choosing dag, task and run ids to break out of the comment and
append SQL of their own. The escaping must hold for any text, so the properties are checked
over generated text (hypothesis), not a list of known tricks; PostgreSQL's own parser then says
what the commented statement means.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import parse_sql
from pglast.stream import RawStream

from airflow_hoop.ledger.correlation import (
    APPLICATION_NAME_MAX,
    StatementTag,
    application_name,
    find_comment,
    step_digest,
)
from airflow_hoop.ledger.records import StepRef

HOSTILE = "*/ DROP TABLE x; --\n/* nested /* */ '\"; $$ \\ é 😀 \t"
#: NUL-free text of every kind (the gateway refuses NUL before anything runs).
TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=80)


def _step(dag: str = "d", task: str = "t", run: str = "r", *, try_number=1, map_index=-1):
    return StepRef(dag_id=dag, task_id=task, run_id=run, try_number=try_number, map_index=map_index)


def _meaning(sql: str) -> str:
    """What PostgreSQL parses the text as (comments dropped), printed back."""
    return RawStream()(parse_sql(sql))


def test_hostile_ids_do_not_leave_the_comment():
    step = _step(HOSTILE, HOSTILE, HOSTILE, map_index=3)
    comment = StatementTag.for_step(step).comment(42)
    assert comment.startswith("/*") and comment.endswith("*/ ")
    assert comment.count("*/") == 1 and comment.count("/*") == 1
    # Six values, each between two quotes of ours: no quote of the ids got in.
    assert "\n" not in comment and comment.count("'") == 12
    # The statement PostgreSQL sees is the task's statement, and only it.
    sql = comment + "SELECT 1"
    assert _meaning(sql) == _meaning("SELECT 1")
    found = find_comment(f'LOG:  AUDIT: SESSION,1,1,READ,SELECT,,,"{sql}",<not logged>')
    assert found is not None
    assert (found.dag_id, found.task_id, found.run_id) == (HOSTILE, HOSTILE, HOSTILE)
    assert found.map_index == 3 and found.seq == 42 and found.step_key == step.key


@settings(max_examples=300, deadline=None)
@given(dag=TEXT, task=TEXT, run=TEXT, seq=st.integers(0, 2**62))
def test_any_ids_round_trip_and_never_change_the_statement(dag, task, run, seq):
    step = _step(dag, task, run)
    comment = StatementTag.for_step(step).comment(seq)
    assert comment.isascii() and comment.count("*/") == 1 and "\n" not in comment
    assert _meaning(comment + "DELETE FROM t WHERE a = 1") == _meaning("DELETE FROM t WHERE a = 1")
    found = find_comment(comment)
    assert found is not None and found.seq == seq and found.step_key == step.key


def test_parameterized_statements_double_the_percent_signs():
    tag = StatementTag.for_step(_step("50% off", "t", "r"))
    plain, bound = tag.comment(7), tag.comment(7, parameters=True)
    assert "%25" in plain and "%%25" in bound
    assert bound.replace("%%", "%") == plain


def test_the_last_statement_of_a_script_comment_cannot_swallow_ours():
    # A script ending in a line comment: ours is in front, so it is not commented out.
    comment = StatementTag.for_step(_step()).comment(1)
    assert find_comment(comment + "SELECT 1 -- trailing") is not None


@settings(max_examples=300, deadline=None)
@given(dag=TEXT, task=TEXT, run=TEXT, map_index=st.integers(-1, 10**6))
def test_application_name_fits_postgres_and_is_stable(dag, task, run, map_index):
    key = _step(dag, task, run, map_index=map_index).key
    name = application_name(key)
    assert len(name.encode()) <= APPLICATION_NAME_MAX
    # PostgreSQL replaces anything outside printable ASCII with '?': nothing of that kind.
    assert all(32 <= ord(c) < 127 for c in name)
    assert name.startswith(f"hoop:{step_digest(key)}:")
    assert application_name(key) == name
    # Never cut inside a percent escape.
    tail = name.split(":", 2)[2]
    assert "%" not in tail[-2:]


def test_application_name_differs_by_step_even_when_the_readable_part_is_cut():
    long = "x" * 300
    a = application_name(_step(long, "t", "r1").key)
    b = application_name(_step(long, "t", "r2").key)
    assert a != b and len(a) == len(b) == APPLICATION_NAME_MAX


@pytest.mark.parametrize(
    "text",
    [
        "SELECT 1",
        "/* dag_id='x' */ SELECT 1",
        "/*dag_id='a',hoop_seq='x',map_index='-1',run_id='r',task_id='t',try_number='1'*/ SELECT",
        "/*dag_id='a',hoop_seq='1'*/ SELECT 1",
    ],
)
def test_other_comments_are_not_ours(text):
    assert find_comment(text) is None
