"""The report's write column and the Audit tab's label: the label the gateway recorded, the parser's for older records.

Transaction control is not a write (it used to count as an unapproved one); a recorded label
wins over the parser; a record without one (written before labels were recorded) is labelled
from its script; every shell command is a write.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from airflow_hoop.ledger.report import ReportBuilder, ReportScope
from airflow_hoop.ledger.verification import Verification

_STEP = {"dag_id": "d", "task_id": "t", "run_id": "r", "try_number": 1, "map_index": -1}


def _pair(seq: int, script: str, **intent: Any) -> list[dict[str, Any]]:
    session = f"s{seq}"
    body = {"kind": "session.intent", "session_id": session, "connection": "c", "script": script}
    result = {"kind": "session.result", "session_id": session, "connection": "c"}
    result |= {"status": "success", "exit_code": 0}
    time = "2026-01-01T00:00:00Z"
    return [
        {"seq": seq, "time": time, "step": _STEP, "body": body | intent},
        {"seq": seq + 1, "time": time, "step": _STEP, "body": result},
    ]


def test_the_write_column_follows_the_recorded_label_then_the_parser(tmp_path: Path) -> None:
    report = ReportBuilder(tmp_path, ReportScope())
    cases = [
        ("COMMIT", {}, "no", "not needed (transaction control)"),  # old record: parsed
        ("BEGIN", {"label": "transaction_control"}, "no", "not needed (transaction control)"),
        ("SELECT lower(x, 1)", {}, "yes", "none recorded"),  # old record: a user function
        ("SELECT count(*) FROM t", {}, "no", "not needed (read-only)"),
        # the recorded label wins: the gateway's parser at the time said write
        ("SELECT count(*) FROM t", {"label": "write"}, "yes", "none recorded"),
        ("echo hi", {"shell": {"argv": ["sh"]}}, "yes", "none recorded"),
    ]
    for n, (script, extra, _, _) in enumerate(cases):
        for record in _pair(10 * (n + 1), script, **extra):
            report.add(record)
    report.finish(Verification(ok=True), {})
    rows = list(csv.DictReader((tmp_path / "report.csv").open(encoding="utf-8")))
    assert [(r["command"], r["write"], r["approval"]) for r in rows] == [
        (script, write, approval) for script, _, write, approval in cases
    ]
    assert report.counts["writes"] == 3 and report.counts["writes without approval"] == 3


def test_the_audit_tab_shows_each_commands_recorded_label() -> None:
    from airflow_hoop.plugins.audit.model import build_steps
    from airflow_hoop.wire.audit import RunRecords

    records = _pair(1, "SELECT f()", label="write") + _pair(
        3, "COMMIT", label="transaction_control"
    )
    records += _pair(5, "SELECT 1")  # written before labels were recorded: none shown
    (step,) = build_steps(RunRecords(records=records))
    assert [c.label for c in step.commands] == ["write", "transaction_control", None]
