"""``airflow-hoop audit rehearse``: a dry export of a window, timed, and the readiness scorecard.

It runs what a reviewer will run: ``audit export`` (``cli/export.py``), then ``verify
--bundle`` on what was written (``ledger/bundle.py``), timing each (wall clock) and reporting
the peak memory of the process and its report worker. Then it reads the bundle's records once
more and scores them against the four questions (``ledger/scorecard.py``). Nothing here
changes the ledger or the gateway: it only reads, as the auditor key allows.
"""

from __future__ import annotations

import resource
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import msgspec
import yaml
from rich.table import Table
from rich.text import Text

from airflow_hoop.cli.audit import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREADABLE,
    console,
    err_console,
    ledger_source,
    parse_when,
    pinned_key,
    print_result,
    progress_bar,
    with_source_and_anchor,
)
from airflow_hoop.errors import ConfigError, HoopError
from airflow_hoop.ledger.scorecard import ConnectionPolicy, RuleInfo, Scorecard, ScorecardResult

_STYLE = {"ok": "green", "warn": "yellow", "gap": "bold red"}
_QUESTIONS = {
    1: "Which identity ran each step?",
    2: "What did it reach?",
    3: "Were sensitive steps approved?",
    4: "Could the orchestrator have altered the record?",
}


@click.command("rehearse")
@with_source_and_anchor
@click.option("--last-month", is_flag=True, help="The previous calendar month (UTC).")
@click.option("--since", help="Start of the window (ISO 8601; UTC if no zone).")
@click.option("--until", help="End of the window, exclusive (ISO 8601).")
@click.option("--dag", "dags", multiple=True, help="Score only these DAGs (repeat the option).")
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The gateway's settings file, for its approval rules (default with --stack: its own; "
    "without: inferred from the records).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="New (or empty) directory for the bundle (default: ./rehearsal-SINCE-UNTIL).",
)
def audit_rehearse(
    stack_dir: Path | None,
    gateway_url: str | None,
    api_key: str | None,
    public_key_file: Path | None,
    anchor_dir: Path | None,
    last_month: bool,
    since: str | None,
    until: str | None,
    dags: tuple[str, ...],
    settings_file: Path | None,
    out_dir: Path | None,
) -> None:
    """Rehearse the review: export a window, verify the bundle, time both, score the evidence.

    Prints how long the export and the verification took and the peak memory, then a
    scorecard against the four questions a reviewer asks: steps under a shared or static
    identity, writes on connections with no approval rule, writes under a rule without an
    approval, break-glass approvals, masking policies in force, the unsigned tail, anchor
    coverage and records per day. The bundle stays in --out for the reviewer.

    Exit codes: 0 ready (no gap); 1 gaps found (each named); 2 nothing could be rehearsed
    (gateway, key, window or output problem).
    """
    from airflow_hoop.cli.export import export_bundle
    from airflow_hoop.client.audit import AuditClient
    from airflow_hoop.ledger.anchor import DirectoryAnchor
    from airflow_hoop.ledger.bundle import RECORDS, verify_bundle

    try:
        start, end = _window(last_month, since, until)
        out = out_dir or Path(f"rehearsal-{start.date()}-{end.date()}")
        keys = pinned_key(public_key_file)
        url, key, keys, anchor_dir = ledger_source(
            stack_dir, gateway_url, api_key, keys, anchor_dir
        )
        policy = _policy(settings_file, stack_dir)
        started = time.monotonic()
        with AuditClient(url, key) as client:
            keys = keys or client.public_key()
            with progress_bar("Exporting", None) as advance:
                manifest = export_bundle(
                    client,
                    out,
                    start,
                    end,
                    keys=keys,
                    dag_id=dags[0] if len(dags) == 1 else None,
                    anchor_dir=anchor_dir,
                    on_total=advance.total,
                    progress=advance,
                )
        exported = time.monotonic() - started
        started = time.monotonic()
        anchor = DirectoryAnchor(anchor_dir) if anchor_dir else None
        with console.status(f"Verifying the bundle {out}..."):
            verification = verify_bundle(
                out,
                public_key=keys,
                anchor=anchor.entries() if anchor else None,
                anchor_location=anchor.location if anchor else None,
            )
        verified = time.monotonic() - started
        card = Scorecard(
            first_seq=manifest.window.first_seq,
            last_seq=manifest.window.last_seq,
            since=start,
            until=end,
            dags=list(dags),
            policy=policy,
        )
        decode = msgspec.json.Decoder()  # several times json.loads' speed on a month
        with open(out / RECORDS, "rb") as records:
            for line in records:
                card.add(decode.decode(line))
        result = card.finish(verification)
    except HoopError as exc:
        err_console.print(str(exc), style="red", markup=False, highlight=False)
        sys.exit(EXIT_UNREADABLE)
    console.print(f"Bundle written to {out} ({len(manifest.files)} files).")
    print_result(verification)
    _print_timing(exported, verified, manifest.window.records)
    _print_scorecard(result, start, end, dags)
    sys.exit(EXIT_OK if result.ready else EXIT_FAILED)


def _window(last_month: bool, since: str | None, until: str | None) -> tuple[datetime, datetime]:
    if last_month:
        if since or until:
            raise click.UsageError("give --last-month, or --since with --until, not both")
        first_of_this = datetime.now(timezone.utc).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        previous = (first_of_this - timedelta(days=1)).replace(day=1)
        return previous, first_of_this
    if not (since and until):
        raise click.UsageError("give --last-month, or --since with --until")
    start, end = parse_when(since, "--since"), parse_when(until, "--until")
    if end <= start:
        raise click.UsageError("--until must be after --since")
    return start, end


def _policy(settings_file: Path | None, stack_dir: Path | None) -> list[ConnectionPolicy] | None:
    """Approval rules and masking names per connection, read from the settings file's
    ``connections`` only (no secret is needed for them, nor read into anything)."""
    if settings_file is None and stack_dir is not None:
        from airflow_hoop.devstack.models import StackInfo

        settings_file = Path(StackInfo.load(stack_dir).gateway_settings_path)
    if settings_file is None:
        return None
    try:
        data = yaml.safe_load(settings_file.read_text()) or {}
        return [_connection_policy(c) for c in data.get("connections") or []]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the approval rules from {settings_file} ({type(exc).__name__})",
            "give the gateway's settings file with --settings, or leave it out to infer them",
        ) from None


def _connection_policy(conn: dict[str, Any]) -> ConnectionPolicy:
    rules = [
        RuleInfo(
            name=r.get("name"),
            dags=r.get("dags") or ["*"],
            required_for=r.get("required_for", "writes"),
        )
        for r in conn.get("approvals") or []
    ]
    masking = (conn.get("masking") or {}).get("name")
    return ConnectionPolicy(name=conn["name"], rules=rules, masking=masking)


def _peak_mib() -> tuple[float, float]:
    """Peak resident memory of this process and of its (waited-for) children, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def _print_timing(exported: float, verified: float, records: int) -> None:
    own, children = _peak_mib()
    rate = f", {records / exported:,.0f} records/s" if exported > 0 and records else ""
    console.print(
        f"Export {exported:.1f} s{rate}; verify --bundle {verified:.1f} s; peak memory "
        f"{own:.0f} MiB (report worker {children:.0f} MiB).",
        markup=False,
        highlight=False,
    )


def _print_scorecard(
    result: ScorecardResult, start: datetime, end: datetime, dags: tuple[str, ...]
) -> None:
    scope = f"DAGs {', '.join(dags)}" if dags else "every DAG"
    table = Table(
        title=f"Readiness, {start.isoformat()} to {end.isoformat()}, {scope}",
        caption=f"approval rules: {result.policy_source}",
        show_lines=False,
    )
    for column in ("question", "check", "value", "status", "detail"):
        table.add_column(column, overflow="fold")
    for line in result.lines:
        # Text, not markup: a step key or an approver's name may hold '['.
        table.add_row(
            Text(f"{line.question}. {_QUESTIONS[line.question]}"),
            Text(line.name),
            Text(line.value),
            Text(line.status, style=_STYLE[line.status]),
            Text(line.detail),
        )
    console.print(table)
    verdict = "READY: no gaps" if result.ready else "GAPS FOUND: see the lines marked gap"
    console.print(verdict, style="bold green" if result.ready else "bold red")
