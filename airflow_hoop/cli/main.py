"""``airflow-hoop``: the gateway, the embedded stack, the demo and the audit commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from airflow_hoop.cli.audit import audit_export, audit_verify
from airflow_hoop.cli.doctor import doctor
from airflow_hoop.cli.rehearse import audit_rehearse
from airflow_hoop.cli.stream import audit_stream
from airflow_hoop.errors import HoopError

console = Console(width=None if sys.stdout.isatty() else 160)


@click.group()
@click.version_option(package_name="airflow-hoop")
def main() -> None:
    """Governed SQL and shell steps for Apache Airflow."""


main.add_command(doctor)


# -- gateway -------------------------------------------------------------------------------
@main.group()
def gateway() -> None:
    """Run the gateway service."""


@gateway.command("serve")
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False),
    envvar="HOOP_GATEWAY_CONFIG",
    help="Gateway settings file (YAML); environment variables HOOP_GATEWAY_* override it.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes sharing the port; they share only the gateway database.",
)
def gateway_serve(config: str | None, workers: int) -> None:
    """Serve the gateway API (uvicorn) until interrupted."""
    from airflow_hoop.gateway.__main__ import serve
    from airflow_hoop.gateway.settings import GatewaySettings

    serve(GatewaySettings.load(config), workers=workers, config=config)


@gateway.command("check-config")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, readable=True))
def gateway_check_config(config: str) -> None:
    """Validate a gateway settings file (plus HOOP_GATEWAY_* variables) without starting.

    Prints what the gateway would run with: connections, the Vault auth method, API keys by
    name (never a secret). Exit codes: 0 valid; 1 invalid (the error names each wrong key);
    2 the file is missing or unreadable.
    """
    from airflow_hoop.gateway.config_report import describe
    from airflow_hoop.gateway.settings import GatewaySettings

    try:
        settings = GatewaySettings.load(config)
    except HoopError as exc:
        # markup off: the message starts with "[configuration]", which rich would eat.
        console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    console.print(f"{config}: valid", style="green")
    for line in describe(settings):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


# -- stack ---------------------------------------------------------------------------------
@main.group()
def stack() -> None:
    """Start and stop the embedded stack (throwaway PostgreSQL, OpenBao dev server, gateway)."""


@stack.command("up")
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the stack keeps its data (default: a new directory under /dev/shm or /tmp).",
)
@click.option(
    "--pgaudit",
    is_flag=True,
    help="Load pgaudit into PostgreSQL and log every statement (docs/correlation.md).",
)
def stack_up(run_dir: Path | None, pgaudit: bool) -> None:
    """Bring the stack up and print how to reach it and how to point Airflow at it."""
    from airflow_hoop.devstack import stack as devstack

    info = devstack.up(run_dir, pgaudit=pgaudit)
    console.print(f"Stack running in {info.run_dir}")
    if pgaudit:
        console.print(f"  pgaudit entries in {info.pg_json_log}")
    console.print(
        f"  gateway {info.gateway_url}\n  OpenBao {info.bao_addr}\n  PostgreSQL 127.0.0.1:{info.pg_port}"
    )
    console.print("Airflow connections (export these):")
    for name in info.airflow_env():
        console.print(f"  {name}")
    console.print(f'  eval "$(airflow-hoop stack env {info.run_dir})"')
    console.print(f"Stop it with: airflow-hoop stack down {info.run_dir}")


@stack.command("env")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def stack_env(run_dir: Path) -> None:
    """Print shell exports of the AIRFLOW_CONN_* variables for a running stack."""
    import shlex

    from airflow_hoop.devstack.models import StackInfo

    for name, value in StackInfo.load(run_dir).airflow_env().items():
        click.echo(f"export {name}={shlex.quote(value)}")


@stack.command("down")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def stack_down(run_dir: Path) -> None:
    """Stop every process of the stack by PID and remove its directory."""
    from airflow_hoop.devstack import stack as devstack

    devstack.down(run_dir)
    console.print(f"Stack in {run_dir} stopped.")


@stack.command("allow")
@click.argument("dag_glob")
@click.option(
    "--stack",
    "run_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The stack's run directory (printed by `stack up`).",
)
@click.option(
    "--connection", default=None, help="Only this gateway connection (default: every one)."
)
def stack_allow(dag_glob: str, run_dir: Path, connection: str | None) -> None:
    """Let DAGs matching DAG_GLOB use the stack's connections, without a restart.

    Adds the glob to allowed_dags in the stack's gateway.yaml (validated first) and sends
    SIGHUP to the stack's gateway, which reloads its connections and records the change in
    the ledger. Exit codes: 0 applied (or already allowed); 1 refused or not confirmed.
    """
    from airflow_hoop.devstack.stack_policy import allow

    try:
        outcome = allow(run_dir, dag_glob, connection)
    except HoopError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    if outcome.already:
        console.print(f"{dag_glob} is already allowed on {', '.join(outcome.connections)}")
        return
    console.print(
        f"{dag_glob} added to allowed_dags of {', '.join(outcome.connections)}",
        markup=False,
        highlight=False,
    )
    style = "green" if outcome.reloaded else "red"
    console.print(f"gateway: {outcome.gateway_says}", style=style, markup=False, highlight=False)
    if not outcome.reloaded:
        sys.exit(1)


# -- demo ----------------------------------------------------------------------------------
@main.command()
@click.option(
    "--keep", is_flag=True, help="Leave the stack running afterwards and print how to reach it."
)
def demo(keep: bool) -> None:
    """Run example_dags/governed_etl.py on the embedded stack and show the ledger."""
    from airflow_hoop.cli.demo import run_demo

    sys.exit(run_demo(console, keep=keep))


@main.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the Airflow UI (default 8080 when free, else any free port; 0: any).",
)
def ui(port: int | None) -> None:
    """Start the stack and Airflow with the example DAGs triggered; print the URL and logins.

    One run waits for an approval you can give in the UI. Ctrl-C stops everything started.
    """
    from airflow_hoop.devstack.ui_session import run_ui

    try:
        code = run_ui(console, port=port)
    except HoopError as exc:  # everything started was stopped; say what failed and the fix
        console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        code = 1
    sys.exit(code)


# -- audit ---------------------------------------------------------------------------------
@main.group()
def audit() -> None:
    """Verify the ledger, export the reviewer's bundle, stream it to a SIEM."""


# verify (live or --bundle) and export live in audit.py; imported here so that
# ``airflow_hoop.cli.main.audit_verify`` keeps working.
audit.add_command(audit_verify)
audit.add_command(audit_export)
audit.add_command(audit_stream)
audit.add_command(audit_rehearse)


if __name__ == "__main__":
    main()
