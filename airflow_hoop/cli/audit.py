"""``airflow-hoop audit verify`` and ``airflow-hoop audit export`` (registered in main.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from airflow_hoop.errors import ConfigError, HoopError
from airflow_hoop.ledger.checkpoint import PublicKeySet
from airflow_hoop.ledger.verification import Verification

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

EXIT_OK, EXIT_FAILED, EXIT_UNREADABLE = 0, 1, 2
_ADVANCE_EVERY = 5000  # records between progress bar updates (rich costs µs per call)

_source_options = [
    click.option(
        "--stack",
        "stack_dir",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="An embedded stack: its gateway, auditor key, anchor, and the key from its Vault.",
    ),
    click.option("--gateway", "gateway_url", help="Gateway URL."),
    click.option(
        "--api-key", envvar="HOOP_API_KEY", help="Auditor API key (hpk_...); or $HOOP_API_KEY."
    ),
    click.option(
        "--public-key",
        "public_key_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Pin the checkpoint public key: a public-key.json, or the JSON of "
        "`bao read -format=json transit/keys/ledger-checkpoint`.",
    ),
]
_anchor_option = click.option(
    "--anchor",
    "anchor_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Anchor directory to compare the checkpoints with (default with --stack: its own).",
)


def with_source_options(fn: Callable[..., None]) -> Callable[..., None]:
    """--stack, --gateway, --api-key, --public-key: where a command reads the ledger from."""
    for option in reversed(_source_options):
        fn = option(fn)
    return fn


def _with_source(fn: Callable[..., None]) -> Callable[..., None]:
    return with_source_options(_anchor_option(fn))


@click.command("verify")
@_with_source
@click.option(
    "--bundle",
    "bundle_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Verify an export bundle offline (no gateway, Vault or network).",
)
def audit_verify(
    stack_dir: Path | None,
    gateway_url: str | None,
    api_key: str | None,
    public_key_file: Path | None,
    anchor_dir: Path | None,
    bundle_dir: Path | None,
) -> None:
    """Verify the ledger: the hash chain, every checkpoint signature, the anchor and the tail.

    Reads the ledger from a gateway (--stack, or --gateway with --api-key) or from an export
    bundle (--bundle, offline). On failure it prints the first failing sequence and what
    failed: content changed, record missing, reordered, signature invalid, tail truncated or
    anchor mismatch.

    Exit codes: 0 the ledger verifies; 1 it does not (the first failure is named); 2 it could
    not be verified (ledger, bundle, key or anchor unreadable: nothing was concluded).
    """
    try:
        keys = _pinned_key(public_key_file)
        if bundle_dir is not None:
            from airflow_hoop.ledger.anchor import DirectoryAnchor
            from airflow_hoop.ledger.bundle import verify_bundle

            anchor = DirectoryAnchor(anchor_dir) if anchor_dir else None
            with console.status(f"Verifying the bundle {bundle_dir}..."):
                result = verify_bundle(
                    bundle_dir,
                    public_key=keys,
                    anchor=anchor.entries() if anchor else None,
                    anchor_location=anchor.location if anchor else None,
                )
        else:
            result = _verify_live(stack_dir, gateway_url, api_key, keys, anchor_dir)
    except HoopError as exc:
        err_console.print(str(exc), style="red", markup=False, highlight=False)
        sys.exit(EXIT_UNREADABLE)
    sys.exit(_print_result(result))


def _verify_live(
    stack_dir: Path | None,
    gateway_url: str | None,
    api_key: str | None,
    keys: PublicKeySet | None,
    anchor_dir: Path | None,
) -> Verification:
    from airflow_hoop.cli.export import verify_live
    from airflow_hoop.client.audit import EPOCH, FAR_FUTURE, AuditClient

    url, key, keys, anchor_dir = _source(stack_dir, gateway_url, api_key, keys, anchor_dir)
    with AuditClient(url, key) as client:
        if keys is None:
            keys = client.public_key()
        if anchor_dir is None:
            err_console.print(
                "No anchor given (--anchor): a deleted tail of the ledger cannot be detected.",
                style="yellow",
            )
        total = client.window(EPOCH, FAR_FUTURE).head_seq or 0
        with _progress("Verifying", total) as advance:
            return verify_live(client, keys, anchor_dir=anchor_dir, progress=advance)


@click.command("export")
@_with_source
@click.option("--since", required=True, help="Start of the window (ISO 8601; UTC if no zone).")
@click.option("--until", required=True, help="End of the window, exclusive (ISO 8601).")
@click.option("--dag", "dag_id", help="Report only this DAG's steps (the bundle keeps all).")
@click.option("--connection", help="Report only this connection (the bundle keeps all).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New (or empty) directory for the bundle.",
)
def audit_export(
    stack_dir: Path | None,
    gateway_url: str | None,
    api_key: str | None,
    public_key_file: Path | None,
    anchor_dir: Path | None,
    since: str,
    until: str,
    dag_id: str | None,
    connection: str | None,
    out_dir: Path,
) -> None:
    """Write the reviewer's bundle for a time window, verifying it as it goes.

    The bundle holds the window's records (JSON Lines, with the records from the checkpoint
    before the window to the one that covers its end, so every record is under a signature),
    those checkpoints, the public key and how it was obtained, a report (HTML and CSV) that
    answers the four questions, and a manifest with the SHA-256 of every file. --dag and
    --connection narrow the report; the chain needs every record, so the bundle keeps them.

    Exit codes: 0 written and verified; 1 written, but the ledger did not verify (the bundle
    and its report say where); 2 nothing usable was written (gateway, key or output problem).
    """
    from airflow_hoop.cli.export import export_bundle
    from airflow_hoop.client.audit import AuditClient

    try:
        start, end = _when(since, "--since"), _when(until, "--until")
        if end <= start:
            raise click.UsageError("--until must be after --since")
        keys = _pinned_key(public_key_file)
        url, key, keys, anchor_dir = _source(stack_dir, gateway_url, api_key, keys, anchor_dir)
        with AuditClient(url, key) as client:
            keys = keys or client.public_key()
            with _progress("Exporting", None) as advance:
                manifest = export_bundle(
                    client,
                    out_dir,
                    start,
                    end,
                    keys=keys,
                    dag_id=dag_id,
                    connection=connection,
                    anchor_dir=anchor_dir,
                    on_total=advance.total,
                    progress=advance,
                )
    except HoopError as exc:
        err_console.print(str(exc), style="red", markup=False, highlight=False)
        sys.exit(EXIT_UNREADABLE)
    console.print(f"Bundle written to {out_dir} ({len(manifest.files)} files).")
    sys.exit(_print_result(manifest.verification))


# -- helpers ---------------------------------------------------------------------------------


def _when(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 date or time", param_hint=option
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _pinned_key(path: Path | None) -> PublicKeySet | None:
    if path is None:
        return None
    from airflow_hoop.cli.export import load_public_key

    return load_public_key(path)


def _source(
    stack_dir: Path | None,
    gateway_url: str | None,
    api_key: str | None,
    keys: PublicKeySet | None,
    anchor_dir: Path | None,
) -> tuple[str, str, PublicKeySet | None, Path | None]:
    """Gateway URL, API key, public key (when known without the gateway) and anchor."""
    url, key = gateway_source(stack_dir, gateway_url, api_key)
    if stack_dir is not None:
        from airflow_hoop.devstack.models import StackInfo

        info = StackInfo.load(stack_dir)
        if anchor_dir is None and info.anchor_dir and Path(info.anchor_dir).is_dir():
            anchor_dir = Path(info.anchor_dir)
        return url, key, keys or stack_key(info), anchor_dir
    return url, key, keys, anchor_dir


def gateway_source(
    stack_dir: Path | None, gateway_url: str | None, api_key: str | None
) -> tuple[str, str]:
    """The gateway URL and auditor key: an embedded stack's, or the options' (both needed)."""
    if stack_dir is not None:
        from airflow_hoop.devstack.models import StackInfo

        info = StackInfo.load(stack_dir)
        return info.gateway_url, info.auditor_api_key
    if not (gateway_url and api_key):
        raise click.UsageError("give --stack RUN_DIR, or --gateway URL with --api-key")
    return gateway_url, api_key


def stack_key(info: object) -> PublicKeySet:
    """The embedded stack's key, read from its Vault (not through the gateway)."""
    from airflow_hoop.devstack import vault_setup
    from airflow_hoop.devstack.models import StackInfo
    from airflow_hoop.ledger.checkpoint import KeySource

    assert isinstance(info, StackInfo)
    client = vault_setup.vault_client(info.bao_addr, info.bao_root_token)
    try:
        resp = client.secrets.transit.read_key(
            name=vault_setup.CHECKPOINT_KEY, mount_point=vault_setup.TRANSIT_MOUNT
        )
    except Exception as exc:  # hvac and requests errors alike: the key is unreadable
        raise ConfigError(
            f"cannot read the checkpoint key from the stack's Vault at {info.bao_addr} "
            f"({type(exc).__name__})",
            "check that the stack runs (airflow-hoop stack up)",
        ) from None
    finally:
        client.adapter.close()
    keys = resp["data"]["keys"]
    return PublicKeySet(
        key_name=vault_setup.CHECKPOINT_KEY,
        keys={int(v): str(k["public_key"]) for v, k in keys.items()},
        source=KeySource(
            how="read from the embedded stack's Vault (transit), not through the gateway",
            url=f"{info.bao_addr}/v1/{vault_setup.TRANSIT_MOUNT}/keys/{vault_setup.CHECKPOINT_KEY}",
            fetched_at=datetime.now(timezone.utc),
        ),
    )


class _Advance:
    """Per-record progress callback that touches the rich bar only every few thousand."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.task, self.pending = progress, TaskID(task), 0

    def __call__(self, n: int) -> None:
        self.pending += n
        if self.pending >= _ADVANCE_EVERY:
            self.progress.advance(self.task, self.pending)
            self.pending = 0

    def total(self, n: int) -> None:
        self.progress.update(self.task, total=n)

    def flush(self) -> None:
        self.progress.advance(self.task, self.pending)
        self.pending = 0


@contextmanager
def _progress(what: str, total: int | None) -> Iterator[_Advance]:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("records"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        advance = _Advance(progress, progress.add_task(what, total=total))
        yield advance
        advance.flush()


def _print_result(result: Verification) -> int:
    for warning in result.warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)
    style = "bold green" if result.ok else "bold red"
    console.print(result.summary(), style=style, markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK if result.ok else EXIT_FAILED


# -- shared with ``audit rehearse`` (cli/rehearse.py) ----------------------------------------
with_source_and_anchor = _with_source
parse_when = _when
pinned_key = _pinned_key
ledger_source = _source
progress_bar = _progress
print_result = _print_result
