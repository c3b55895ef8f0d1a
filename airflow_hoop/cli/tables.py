"""Render ledger read-backs for people: the step table of the demo and ``audit show``."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from airflow_hoop.ledger.steps import StepView
from airflow_hoop.ledger.verification import Verification


def steps_table(steps: list[StepView]) -> Table:
    """One row per statement, grouped by step: identity, database user, command, result."""
    table = Table(title="What happened (read back from the gateway's ledger)", show_lines=True)
    for column in (
        "step (dag / task / run / try)",
        "database user",
        "statement",
        "rows",
        "status",
        "ms",
    ):
        table.add_column(column, overflow="fold")
    for view in steps:
        s = view.step
        identity = f"{s.dag_id}\n{s.task_id}\n{s.run_id}\ntry {s.try_number}"
        if view.refusals:
            table.add_row(
                identity, "-", "refused: " + "; ".join(view.refusals), "-", "refused", "-"
            )
        for i, st in enumerate(view.statements):
            rows = str(st.rows_returned) if st.rows_returned else str(max(st.rowcount, 0))
            table.add_row(
                identity if i == 0 else "",
                st.db_user or "-",
                _short(st.script),
                rows,
                st.status if not st.error else f"{st.status}: {st.error}",
                f"{st.duration_ms:.1f}" if st.duration_ms is not None else "-",
            )
    return table


def steps_summary(steps: list[StepView]) -> str:
    """One line a reviewer reads first: identities, users, revocations."""
    users = [u for v in steps for u in v.db_users]
    revoked = sum(1 for v in steps if v.revoked_at is not None)
    statements = sum(len(v.statements) for v in steps)
    refused = sum(len(v.refusals) for v in steps)
    shared = len(users) - len(set(users))
    return (
        f"{len(steps)} steps, {statements} statements, {len(set(users))} database users "
        f"({'none shared' if not shared else f'{shared} shared!'}), "
        f"{revoked}/{len(steps)} steps' credentials revoked, {refused} policy refusals"
    )


def print_verification(console: Console, report: Verification) -> None:
    """One line for a chain-only verification (``verify_chain``): it checks no signatures, so
    it says less than ``Verification.summary``, which counts them."""
    if report.failure is not None:
        text = f"FAILED at seq {report.failure.seq}: {report.failure.message}"
    else:
        text = f"OK: {report.records} records, chain intact up to seq {report.last_seq}"
    style = "bold green" if report.ok else "bold red"
    console.print(f"Ledger verification: {text}", style=style)


def _short(script: str, limit: int = 160) -> str:
    text = " ".join(script.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
