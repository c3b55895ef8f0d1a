"""``airflow-hoop audit stream``: the ledger to a SIEM, from a durable cursor (docs/signals.md)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from airflow_hoop.cli.audit import gateway_source, stack_key, with_source_options
from airflow_hoop.errors import ChainBrokenError, GatewayUnavailableError, HoopError

err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

EXIT_OK, EXIT_CHAIN_BROKEN, EXIT_FAILED = 0, 1, 2
#: The HTTP sink's token (sent as ``Authorization: Bearer <token>``).
TOKEN_ENV = "HOOP_SIEM_TOKEN"


@click.command("stream")
@with_source_options
@click.option(
    "--signed-only",
    is_flag=True,
    default=None,
    help="Hold each record until a checkpoint whose signature verifies covers it (needs the "
    "key: --public-key, or --stack's Vault); lag becomes the checkpoint interval.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Stream settings (YAML: format, sink, cursor_file, batch_size, poll_seconds); "
    "the options below override it.",
)
@click.option(
    "--cursor",
    "cursor_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The cursor file: created on the first run, resumed from afterwards.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ocsf", "jsonl"]),
    help="OCSF 1.1 events (default) or the ledger's raw stream lines.",
)
@click.option(
    "--validate-events",
    is_flag=True,
    default=None,
    help="Validate every OCSF event against the models before delivery (slower).",
)
@click.option(
    "--to",
    "sink_kind",
    type=click.Choice(["stdout", "file", "http", "syslog"]),
    help="Where to deliver (default stdout).",
)
@click.option("--file", "file_path", type=click.Path(path_type=Path), help="--to file: path.")
@click.option("--max-bytes", type=int, help="--to file: rotate above this size.")
@click.option("--keep", type=int, help="--to file: rotated files kept.")
@click.option(
    "--url", help="--to http: the collector's URL (its token: $HOOP_SIEM_TOKEN, never an option)."
)
@click.option("--http-format", type=click.Choice(["json", "ndjson"]), help="--to http: batch body.")
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="--to http: CA bundle to verify the collector's certificate with.",
)
@click.option("--syslog-host", help="--to syslog: collector host.")
@click.option("--syslog-port", type=int, help="--to syslog: collector port.")
@click.option(
    "--syslog-transport", type=click.Choice(["udp", "tcp"]), help="--to syslog: transport."
)
@click.option("--batch-size", type=click.IntRange(1, 100_000), help="Records per delivery.")
@click.option("--poll-seconds", type=float, help="Wait at the head of the ledger.")
@click.option(
    "--follow/--once",
    default=True,
    show_default=True,
    help="Keep following the ledger, or stop at its current head.",
)
def audit_stream(
    stack_dir: Path | None,
    gateway_url: str | None,
    api_key: str | None,
    config_file: Path | None,
    public_key_file: Path | None,
    follow: bool,
    **options: Any,
) -> None:
    """Deliver every ledger record, at least once and in order, to a SIEM.

    Records go out as OCSF 1.1 events (or raw JSON Lines) to stdout, a rotating file, an
    HTTP collector (batches, retries with backoff, TLS) or syslog (RFC 5424, UDP or TCP with
    octet counting). Each record's chain link is checked first: a record that does not link
    is not delivered and the stream stops naming its seq. After each delivered batch the
    cursor file is replaced atomically; a restart resumes after it, so nothing is lost and
    only a batch whose delivery was not acknowledged is sent again.

    Exit codes: 0 stopped (--once at the head, or Ctrl-C/SIGTERM after the batch in flight);
    1 the chain is broken (the seq is named; nothing after it was delivered); 2 the gateway,
    the sink or the settings failed (the cursor stands at the last delivered record).
    """
    from airflow_hoop.client.audit import AuditClient, StreamedRecord
    from airflow_hoop.stream.pump import follow as follow_ledger

    try:
        settings = _settings(config_file, options)
        url, key = gateway_source(stack_dir, gateway_url, api_key)
        keys = _keys(public_key_file, stack_dir, settings.signed_only)
        pump = settings.pump(keys=keys)
    except HoopError as exc:
        _fail(exc)
        sys.exit(EXIT_FAILED)
    stop = threading.Event()
    previous = _stop_on_signals(stop)
    err_console.print(
        f"Streaming the ledger after seq {pump.seq} as {settings.format.kind} to "
        f"{settings.sink.kind} (cursor {settings.cursor_file})",
        markup=False,
        highlight=False,
    )
    code = EXIT_OK
    reached = threading.Event()  # one read ran to the head: the gateway and key are right
    try:
        with AuditClient(url, key) as client:

            def read(after_seq: int) -> Iterator[StreamedRecord]:
                yield from client.stream(after_seq)
                reached.set()

            while not stop.is_set():
                try:
                    follow_ledger(
                        pump,
                        read,
                        batch_size=settings.batch_size,
                        poll_seconds=settings.poll_seconds,
                        keep_following=follow,
                        stop=stop,
                    )
                    break
                except GatewayUnavailableError as exc:
                    if not (follow and reached.is_set()):
                        raise  # a wrong URL or a gateway that never answered: say so now
                    # The gateway restarts or the answer was cut: resume from the cursor.
                    err_console.print(f"{exc} (retrying)", markup=False, style="yellow")
                    stop.wait(min(30.0, settings.poll_seconds * 10))
    except ChainBrokenError as exc:
        _fail(exc)
        code = EXIT_CHAIN_BROKEN
    except HoopError as exc:
        _fail(exc)
        code = EXIT_FAILED
    finally:
        pump.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    err_console.print(
        f"{pump.delivered} records delivered; cursor at seq {pump.seq}",
        markup=False,
        highlight=False,
    )
    sys.exit(code)


def _settings(config_file: Path | None, options: dict[str, Any]) -> Any:
    from airflow_hoop.stream.settings import StreamSettings

    overrides: dict[str, Any] = {}
    for option, key in (
        ("cursor_file", "cursor_file"),
        ("signed_only", "signed_only"),
        ("fmt", "format"),
        ("batch_size", "batch_size"),
        ("poll_seconds", "poll_seconds"),
    ):
        if options.get(option) is not None:
            overrides[key] = options[option]
    if options.get("validate_events"):
        if overrides.get("format", "ocsf") != "ocsf":
            raise click.UsageError("--validate-events applies to --format ocsf")
        overrides["format"] = {"kind": "ocsf", "validate_events": True}
    sink = _sink(options)
    if sink is not None:
        overrides["sink"] = sink
    if config_file is not None:
        return StreamSettings.load(config_file, **overrides)
    if "cursor_file" not in overrides:
        raise click.UsageError("give --cursor FILE (or cursor_file in --config)")
    return StreamSettings.build(overrides)


_SINK_OPTIONS = {
    "file": {"file_path": "path", "max_bytes": "max_bytes", "keep": "keep"},
    "http": {
        "url": "url",
        "http_format": "batch_format",
        "ca_file": "ca_file",
    },
    "syslog": {"syslog_host": "host", "syslog_port": "port", "syslog_transport": "transport"},
    "stdout": {},
}


def _sink(options: dict[str, Any]) -> dict[str, Any] | None:
    kind = options.get("sink_kind")
    for other, keys in _SINK_OPTIONS.items():
        given = [o for o in keys if other != kind and options.get(o)]
        if given:
            raise click.UsageError(f"--{given[0].replace('_', '-')} needs --to {other}")
    if kind is None:
        return None
    sink: dict[str, Any] = {"kind": kind}
    for option, key in _SINK_OPTIONS[kind].items():
        if options.get(option) is not None:
            sink[key] = options[option]
    # The token only from the environment (or --config): never on a command line, where any
    # local user reads it in the process list.
    token = os.environ.get(TOKEN_ENV)
    if kind == "http" and token:
        sink["token"] = token
    return sink


def _keys(public_key_file: Path | None, stack_dir: Path | None, signed_only: bool) -> Any:
    """The pinned checkpoint key: from the file, else (signed-only) from the stack's Vault."""
    if public_key_file is not None:
        from airflow_hoop.cli.export import load_public_key

        return load_public_key(public_key_file)
    if signed_only and stack_dir is not None:
        from airflow_hoop.devstack.models import StackInfo

        return stack_key(StackInfo.load(stack_dir))
    return None


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """Stop after the batch in flight on SIGTERM or Ctrl-C; returns the handlers replaced."""

    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}


def _fail(exc: HoopError) -> None:
    err_console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
