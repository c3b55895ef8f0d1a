"""The report puts break-glass approvals first and flags the writes they let through."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from airflow_hoop.ledger.commands import statement_sha256
from airflow_hoop.ledger.report import ReportBuilder, ReportScope
from airflow_hoop.ledger.verification import Verification

STEP = {"dag_id": "payroll", "task_id": "load", "run_id": "r1", "try_number": 1, "map_index": -1}
WRITE = "INSERT INTO pay VALUES (1)"


def _decided(seq: int, review: str, approver: str, glass: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "review.decided",
        "review_id": review,
        "decision": "APPROVED",
        "status": "APPROVED",
        "approver": approver,
        "group": "oncall" if glass else "dba",
        "channel": "gateway-api",
        "reason": "p1 incident" if glass else "checked",
    }
    if glass:
        body["break_glass"] = True
    return {"seq": seq, "time": f"2026-12-05T00:00:0{seq}+00:00", "body": body}


def _write(seq: int, review: str, session: str) -> list[dict[str, Any]]:
    time = f"2026-12-05T00:00:0{seq}+00:00"
    executed = {
        "kind": "review.executed",
        "review_id": review,
        "statement_sha256": statement_sha256(WRITE, None),
    }
    intent = {"kind": "session.intent", "session_id": session, "connection": "warehouse"}
    intent |= {"script": WRITE, "db_user": f"v-{session}", "label": "write"}
    result = {"kind": "session.result", "session_id": session, "status": "success"}
    return [
        {"seq": seq + i, "time": time, "step": STEP, "body": b}
        for i, b in enumerate((executed, intent, result))
    ]


def test_break_glass_is_flagged_first_and_on_its_write(tmp_path: Path) -> None:
    builder = ReportBuilder(tmp_path, ReportScope())
    records = [_decided(1, "rv-normal", "ann", False), *_write(2, "rv-normal", "s1")]
    records += [_decided(5, "rv-glass", "carol", True), *_write(6, "rv-glass", "s2")]
    for record in records:
        builder.add(record)
    builder.finish(Verification(ok=True, records=len(records)), {})
    with open(tmp_path / "report.csv", newline="", encoding="utf-8") as fh:
        rows = {r["review_id"]: r for r in csv.DictReader(fh)}
    assert rows["rv-glass"]["approval"] == "approved, BREAK-GLASS"
    assert rows["rv-glass"]["approved_by"] == "carol via gateway-api (BREAK-GLASS)"
    assert rows["rv-normal"]["approval"] == "approved"
    assert "BREAK-GLASS" not in rows["rv-normal"]["approved_by"]
    page = (tmp_path / "report.html").read_text()
    banner = page.index("BREAK-GLASS approvals: 1")
    assert banner < page.index("<h2>1. Which identity")
    assert "carol" in page[banner : page.index("<h2>1. Which identity")]


def test_no_break_glass_says_so(tmp_path: Path) -> None:
    builder = ReportBuilder(tmp_path, ReportScope())
    for record in [_decided(1, "rv", "ann", False), *_write(2, "rv", "s1")]:
        builder.add(record)
    builder.finish(Verification(ok=True, records=4), {})
    assert "No BREAK-GLASS approval in this range" in (tmp_path / "report.html").read_text()
