"""The reviewer's report: HTML and CSV answers to the four questions, built while streaming.

1. Which identity ran each step? Every statement with its step (dag, task, run, try) and the
   step's own database user; a database user seen under two steps is flagged as shared.
2. What did it reach? Target connection, exact command, result.
3. Were writes approved? Each write (the label the gateway recorded in the intent record, from
   PostgreSQL's parser; for older records without one, ``sql_label`` labels the script here;
   every shell command is a write) with the approval the gateway used for it: approver,
   reason, time, channel. Transaction control (``BEGIN``, ``COMMIT``...) is not a write.
4. Could the record have been altered? The verification result of this very bundle.

``report.csv`` has one row per statement (and per refusal); ``report.html`` the summary and
the first rows of each table (the CSV is complete). Memory holds only what is still open
(statements without a result, approvals not yet used) and one entry per database user.
"""

from __future__ import annotations

import csv
import html
import tempfile
from collections import Counter
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel

from airflow_hoop.ledger.commands import statement_sha256
from airflow_hoop.ledger.records import StatementLabel, StepRef
from airflow_hoop.ledger.report_html import HTML_ROWS, STYLE, HtmlRows, tr
from airflow_hoop.ledger.verification import Verification

CSV_COLUMNS = [
    "intent_seq",
    "result_seq",
    "time",
    "dag_id",
    "task_id",
    "run_id",
    "try_number",
    "map_index",
    "triggered_by",
    "identity",
    "db_user",
    "connection",
    "command",
    "write",
    "status",
    "exit_code",
    "rowcount",
    "approval",
    "approved_by",
    "approval_reason",
    "approved_at",
    "review_id",
    "masking",
]


#: A spreadsheet takes a cell that starts with one of these for a formula (OWASP, "CSV
#: injection"): statement texts, run ids and reasons are chosen by DAG authors and approvers.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """``value`` as a CSV cell that no spreadsheet evaluates: text starting like a formula gets
    a leading single quote (OWASP's advice). Numbers are the report's own and stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


#: Record kinds the report reads; a caller may skip decoding the others.
KINDS = frozenset(
    {"session.intent", "session.result", "review.executed", "review.decided", "policy.refused"}
)


#: How the report names an approval given by a break-glass group (hoop's forced review).
BREAK_GLASS = "BREAK-GLASS"
#: How the approval column names a statement that needs no approval, by its label.
_NOT_WRITES = {"read": "read-only", "transaction_control": "transaction control"}


def _label(body: dict[str, Any], script: str, shell: bool) -> StatementLabel:
    """The recorded label; for records written before labels were recorded, the parser's."""
    recorded = body.get("label")
    if recorded in ("read", "write", "transaction_control"):
        return recorded  # type: ignore[no-any-return]
    if shell:
        return "write"
    # Imported here: a report of labelled records never loads the parser.
    from airflow_hoop.ledger.sql_label import label_sql

    return label_sql(script, body.get("parameters_sha256") is not None).label


class ReportScope(BaseModel):
    """Which records the report covers: a sequence range and optional filters."""

    first_seq: int | None = None
    last_seq: int | None = None
    dag_id: str | None = None
    connection: str | None = None
    title: str = "airflow-hoop audit report"


class ReportBuilder:
    """Feed every verified record in order with ``add``; ``finish`` writes the files."""

    def __init__(self, out_dir: Path, scope: ReportScope) -> None:
        self.out_dir = out_dir
        self.scope = scope
        self._csv_file = open(out_dir / "report.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(CSV_COLUMNS)
        self._tmp = tempfile.TemporaryDirectory(prefix="hoop-report-")
        self._rows = HtmlRows(Path(self._tmp.name) / "statements.html")
        self._writes = HtmlRows(Path(self._tmp.name) / "writes.html")
        self._open: dict[str, dict[str, Any]] = {}
        self._executions: dict[str, dict[str, str]] = {}  # step -> statement digest -> review
        self._reviews: dict[str, list[dict[str, Any]]] = {}
        self._user_step: dict[str, str] = {}
        #: step key -> who vouches for it and which code it ran (question 1)
        self._provenance: dict[str, str] = {}
        self.shared: list[str] = []
        self.counts: Counter[str] = Counter()
        self.masking: Counter[str] = Counter()
        self.refusals: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        #: Approvals by a break-glass group (one person, no review group): shown first.
        self.break_glass: list[dict[str, Any]] = []

    # -- feeding -----------------------------------------------------------------------------
    def add(self, record: dict[str, Any]) -> None:
        seq = record["seq"]
        scope = self.scope
        if (scope.first_seq is not None and seq < scope.first_seq) or (
            scope.last_seq is not None and seq > scope.last_seq
        ):
            return
        body, step = record.get("body") or {}, record.get("step")
        kind = body.get("kind")
        if kind == "review.decided":  # decisions are not bound to the filtered step
            self._decision(record, body)
            return
        if step is None or not self._selected(step, body):
            return
        key = StepRef.key_of(step)
        if key not in self._provenance:
            self._provenance[key] = StepRef.provenance_of(step)
        if kind == "session.intent":
            self._intent(record, body, step, key)
        elif kind == "session.result":
            row = self._open.pop(body.get("session_id", ""), None)
            if row is not None:
                self._result(row, record, body)
        elif kind == "review.executed":
            digest = body.get("statement_sha256", "")
            self._executions.setdefault(key, {})[digest] = body.get("review_id", "")
        elif kind == "policy.refused":
            self.counts["refusals"] += 1
            refusal = {"seq": seq, "time": record["time"], "step": key, **body}
            if len(self.refusals) < HTML_ROWS:
                self.refusals.append(refusal)
            cells = [seq, "", record["time"], *_step_cells(step), key, ""]
            cells += [body.get("connection"), f"(refused: {body.get('reason')})", "", "refused"]
            self._write_csv(cells + [""] * (len(CSV_COLUMNS) - len(cells)))

    def _selected(self, step: dict[str, Any], body: dict[str, Any]) -> bool:
        scope = self.scope
        if scope.dag_id is not None and step.get("dag_id") != scope.dag_id:
            return False
        return scope.connection is None or body.get("connection") == scope.connection

    def _decision(self, record: dict[str, Any], body: dict[str, Any]) -> None:
        decision = {"seq": record["seq"], "time": record["time"], **body}
        self._reviews.setdefault(body.get("review_id", ""), []).append(decision)
        self.counts["decisions"] += 1
        if len(self.decisions) < HTML_ROWS:
            self.decisions.append(decision)
        if body.get("break_glass"):
            self.counts["break-glass approvals"] += 1
            if len(self.break_glass) < HTML_ROWS:
                self.break_glass.append(decision)

    def _intent(
        self, record: dict[str, Any], body: dict[str, Any], step: dict[str, Any], key: str
    ) -> None:
        script = body.get("script", "")
        shell = "shell" in body
        label = _label(body, script, shell)
        db_user = body.get("db_user")
        if db_user:
            owner = self._user_step.setdefault(db_user, key)
            if owner != key and len(self.shared) < HTML_ROWS:
                self.shared.append(f"{db_user}: {owner} and {key}")
        review_id = None
        pending = self._executions.get(key)
        if pending:  # an approval was used by this step: is it for this statement?
            digest = statement_sha256(script, body.get("parameters_sha256"))
            review_id = pending.pop(digest, None)
            if not pending:
                del self._executions[key]
        self.counts["statements"] += 1
        self._open[body.get("session_id", "")] = {
            "intent_seq": record["seq"],
            "time": record["time"],
            "step": step,
            "identity": key,
            "db_user": _shell_label(db_user, body) if shell else (db_user or ""),
            "connection": body.get("connection"),
            "command": script,
            "label": label,
            "write": label == "write",
            "review_id": review_id,
        }

    def _result(self, row: dict[str, Any], record: dict[str, Any], body: dict[str, Any]) -> None:
        row.update(
            result_seq=record["seq"],
            status=body.get("status"),
            exit_code=body.get("exit_code"),
            rowcount=body.get("rowcount"),
            masking=_masking(body),
        )
        self.masking[row["masking"]] += 1
        self._emit(row)

    def _emit(self, row: dict[str, Any]) -> None:
        approval, by, reason, at = self._approval(row)
        row.update(approval=approval, approved_by=by, approval_reason=reason, approved_at=at)
        if row["write"]:
            self.counts["writes"] += 1
            self.counts["writes approved" if by else "writes without approval"] += 1
            self._writes.add(row, _WRITE_KEYS)
        self._rows.add(row, _STATEMENT_KEYS)
        self._write_csv(
            [
                row["intent_seq"],
                row.get("result_seq", ""),
                row["time"],
                *_step_cells(row["step"]),
                row["identity"],
                row["db_user"],
                row["connection"],
                row["command"],
                "yes" if row["write"] else "no",
                row.get("status", "no result in range"),
                row.get("exit_code", ""),
                row.get("rowcount", ""),
                approval,
                by,
                reason,
                at,
                row["review_id"] or "",
                row.get("masking", ""),
            ]
        )

    def _write_csv(self, cells: list[Any]) -> None:
        # Only the CSV: the HTML escapes its cells and shows the text as recorded.
        self._csv.writerow([spreadsheet_safe(cell) for cell in cells])

    def _approval(self, row: dict[str, Any]) -> tuple[str, str, str, str]:
        review_id = row["review_id"]
        if review_id is None:
            if row["write"]:
                return ("none recorded", "", "", "")
            return (f"not needed ({_NOT_WRITES[row['label']]})", "", "", "")
        approved = [d for d in self._reviews.get(review_id, []) if d.get("decision") == "APPROVED"]
        if not approved:
            return (
                f"approved (review {review_id}, decided before this bundle's range)",
                "",
                "",
                "",
            )
        by = "; ".join(
            f"{d.get('approver')} via {d.get('channel')}"
            + (f" ({BREAK_GLASS})" if d.get("break_glass") else "")
            for d in approved
        )
        reason = "; ".join(str(d.get("reason") or "") for d in approved)
        what = (
            f"approved, {BREAK_GLASS}"
            if any(d.get("break_glass") for d in approved)
            else "approved"
        )
        return (what, by, reason, "; ".join(d["time"] for d in approved))

    # -- the end -----------------------------------------------------------------------------
    def finish(self, verification: Verification, facts: dict[str, str]) -> None:
        """Flush statements without a result and write report.html."""
        for row in self._open.values():
            row.update(masking="")
            self._emit(row)
        self._open.clear()
        self._csv_file.close()
        self._rows.close()
        self._writes.close()
        with open(self.out_dir / "report.html", "w", encoding="utf-8") as out:
            self._write_html(out, verification, facts)
        self._tmp.cleanup()

    def _write_html(self, out: IO[str], verification: Verification, facts: dict[str, str]) -> None:
        e = html.escape
        c = self.counts
        out.write(f"<!doctype html><meta charset=utf-8><title>{e(self.scope.title)}</title>")
        out.write(STYLE + f"<h1>{e(self.scope.title)}</h1><table class=facts>")
        for name, value in facts.items():
            out.write(f"<tr><th>{e(name)}<td>{e(value)}")
        out.write("</table>")
        verdict = "ok" if verification.ok else "bad"
        out.write(f"<h2>4. Could the record have been altered?</h2><p class={verdict}>")
        out.write(e(verification.summary()) + "</p><ul>")
        for warning in verification.warnings:
            out.write(f"<li>{e(warning)}")
        out.write("</ul>")
        self._write_break_glass(out)
        out.write("<h2>1. Which identity ran each step?</h2><p>")
        out.write(
            f"{c['statements']} statements by {len(set(self._user_step.values()))} steps, "
            f"{len(self._user_step)} distinct database users. "
        )
        if self.shared:
            out.write("<b class=bad>Database users shared between steps:</b></p><ul>")
            out.writelines(f"<li>{e(item)}" for item in self.shared)
            out.write("</ul>")
        else:
            out.write("<b class=ok>No database user was shared between steps.</b></p>")
        out.write(_provenance_list(self._provenance))
        out.write("<h2>2. What did each step reach?</h2>")
        self._rows.copy_into(out, _STATEMENT_HEADERS)
        out.write("<h2>3. Were the writes approved?</h2><p>")
        out.write(
            f"{c['writes']} writes: {c['writes approved']} with a recorded approval, "
            f"{c['writes without approval']} without one.</p>"
        )
        self._writes.copy_into(out, _WRITE_HEADERS)
        out.write(f"<h3>Review decisions ({c['decisions']})</h3><table><tr>")
        out.write("<th>seq<th>time<th>review<th>decision<th>approver<th>channel<th>reason")
        for d in self.decisions:
            keys = ("review_id", "decision", "approver", "channel", "reason")
            decision = f"{d.get('decision')} ({BREAK_GLASS})" if d.get("break_glass") else None
            cells = [d["seq"], d["time"], *(d.get(k) for k in keys)]
            out.write(tr(cells if decision is None else [*cells[:3], decision, *cells[4:]]))
        out.write("</table><h3>Masking policies that applied</h3><table>")
        out.write("<tr><th>policy<th>statements")
        for policy, count in self.masking.most_common():
            out.write(f"<tr><td>{e(policy or 'none')}<td>{count}")
        out.write(f"</table><h3>Refused by policy ({c['refusals']})</h3><table>")
        out.write("<tr><th>seq<th>time<th>step<th>target<th>reason")
        for r in self.refusals:
            out.write(tr([r["seq"], r["time"], r["step"], r.get("connection"), r.get("reason")]))
        out.write("</table><p>The complete lists are in report.csv.</p>")

    def _write_break_glass(self, out: IO[str]) -> None:
        # First after the verdict: a reviewer must not miss an approval that skipped the groups.
        count = self.counts["break-glass approvals"]
        if not count:
            out.write(f"<p class=ok>No {BREAK_GLASS} approval in this range.</p>")
            return
        out.write(f"<h2 class=bad>{BREAK_GLASS} approvals: {count}</h2><p class=bad>")
        out.write(
            "Each approved a review alone, by a member of a break-glass group, outside the "
            "rule's review groups. Review each one.</p><table><tr>"
        )
        out.write("<th>seq<th>time<th>review<th>approver<th>group<th>channel<th>reason")
        for d in self.break_glass:
            keys = ("review_id", "approver", "group", "channel", "reason")
            out.write(tr([d["seq"], d["time"], *(d.get(k) for k in keys)]))
        out.write("</table>")


_STATEMENT_KEYS = (
    "intent_seq",
    "identity",
    "db_user",
    "connection",
    "command",
    "status",
    "rowcount",
    "masking",
)
_STATEMENT_HEADERS = (
    "seq",
    "step",
    "database user",
    "target",
    "command",
    "status",
    "rows",
    "masking",
)
_WRITE_KEYS = (
    "intent_seq",
    "identity",
    "connection",
    "command",
    "approval",
    "approved_by",
    "approval_reason",
    "approved_at",
)
_WRITE_HEADERS = (
    "seq",
    "step",
    "target",
    "command",
    "approval",
    "approved by",
    "reason",
    "approved at",
)


def _step_cells(step: dict[str, Any]) -> list[Any]:
    return [step.get(k) for k in ("dag_id", "task_id", "run_id", "try_number", "map_index")] + [
        step.get("triggered_by") or ""
    ]


def _shell_label(db_user: str | None, body: dict[str, Any]) -> str:
    """A shell command's identity cell; says so when it ran outside the sandbox."""
    shell = body.get("shell")
    if isinstance(shell, dict) and shell.get("sandbox") == "none":
        return f"{db_user} (shell, no sandbox)" if db_user else "(shell, no sandbox)"
    return db_user or "(shell)"


def _masking(body: dict[str, Any]) -> str:
    masking = body.get("masking")
    if isinstance(masking, dict):
        return (
            f"{masking.get('policy')} ({masking.get('mode')}, "
            f"{masking.get('total_redact_count', 0)} redactions)"
        )
    shell = body.get("shell")
    if isinstance(shell, dict) and shell.get("masked"):
        return f"shell output ({shell['masked']} redactions)"
    return ""


def _provenance_list(provenance: dict[str, str]) -> str:
    """Question 1's second half: who vouches for the steps' claims, and which code ran."""
    counts = Counter(provenance.values())
    items = "".join(f"<li>{n} step(s): {html.escape(text)}" for text, n in counts.most_common())
    return f"<ul class=provenance>{items}</ul>" if items else ""
