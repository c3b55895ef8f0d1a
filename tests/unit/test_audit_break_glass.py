"""The Audit tab marks a break-glass decision BREAK-GLASS, from the ledger record's flag."""

from __future__ import annotations

from typing import Any

from airflow_hoop.plugins.audit.model import _reviews
from airflow_hoop.plugins.common import templates


def _decided(seq: int, approver: str, glass: bool) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {
        "kind": "review.decided",
        "review_id": "rv",
        "decision": "APPROVED",
        "approver": approver,
        "channel": "gateway-api",
        "reason": "<b>p1</b>",
    }
    if glass:
        body["break_glass"] = True
    return seq, {"time": "2026-12-06T00:00:00+00:00", "body": body}


def test_the_audit_tab_flags_break_glass_only() -> None:
    review = _reviews([_decided(1, "ann", False), _decided(2, "carol", True)])["rv"]
    assert [d.break_glass for d in review.decisions] == [False, True]
    macros = templates().get_template("audit_macros.html").module
    html = str(macros.approval_block(review))  # type: ignore[attr-defined]
    lines = [line for line in html.splitlines() if "approver" in line]
    assert "BREAK-GLASS" not in lines[0] and "ann" in lines[0]
    assert '<b class="break-glass">BREAK-GLASS</b>' in lines[1] and "carol" in lines[1]
    assert "&lt;b&gt;p1&lt;/b&gt;" in html  # the reason stays text
