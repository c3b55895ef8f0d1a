"""``airflow-hoop doctor``: check, from where a component runs, what it needs."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from airflow_hoop.wire.health import CheckResult


@click.command("doctor")
@click.argument("component", type=click.Choice(["worker", "api-server", "gateway"]))
@click.option(
    "--conn-id",
    default="hoop_default",
    show_default=True,
    help="worker: the 'hoop' connection the steps use.",
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    envvar="HOOP_GATEWAY_CONFIG",
    help="gateway: its settings file (default: $HOOP_GATEWAY_CONFIG and HOOP_GATEWAY_*).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check, for scripts.")
def doctor(component: str, conn_id: str, config: str | None, as_json: bool) -> None:
    """Check what COMPONENT needs, from the host it runs on, and print the fix for each gap.

    \b
    worker      the 'hoop' connection (--conn-id), the gateway it names (TLS, readiness),
                its Vault (reachable, unsealed), clocks (run it on workers and the triggerer)
    api-server  [hoop] gateway_url, approver_api_key, auditor_api_key, ca_file: the gateway
                accepts each key in its role
    gateway     the settings file, an insert-only database role, the Vault login and the
                transit checkpoint key, shell sandboxes

    Exit codes: 0 every check passed; 1 at least one failed (each failure names its fix).
    """
    from airflow_hoop.doctor.airflow_side import api_server_checks, worker_checks
    from airflow_hoop.doctor.gateway_side import gateway_checks

    if component == "worker":
        results = worker_checks(conn_id)
    elif component == "api-server":
        results = api_server_checks()
    else:
        results = gateway_checks(config)
    if as_json:
        for result in results:
            click.echo(json.dumps(result.model_dump()))
    else:
        _print(component, results)
    sys.exit(0 if all(r.ok for r in results) else 1)


def _print(component: str, results: list[CheckResult]) -> None:
    table = Table(title=f"airflow-hoop doctor: {component}", show_lines=False)
    table.add_column("check")
    table.add_column("")
    table.add_column("detail / fix", overflow="fold")
    for r in results:
        mark = "[green]ok[/green]" if r.ok else "[red]FAIL[/red]"
        text = r.detail if r.ok else f"{r.detail}\n[bold]Fix:[/bold] {r.fix}"
        table.add_row(r.name, mark, text)
    Console(width=None if sys.stdout.isatty() else 140).print(table)
