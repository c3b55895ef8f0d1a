"""``airflow-hoop``: the gateway, the embedded stack, the demo and the audit commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from airflow_hoop.errors import HoopError

console = Console(width=None if sys.stdout.isatty() else 160)


@click.group()
@click.version_option(package_name="airflow-hoop")
def main() -> None:
    """Governed SQL and shell steps for Apache Airflow."""


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
def gateway_serve(config: str | None) -> None:
    """Serve the gateway API (uvicorn) until interrupted."""
    from airflow_hoop.gateway.__main__ import serve
    from airflow_hoop.gateway.settings import GatewaySettings

    serve(GatewaySettings.load(config))


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
def stack_up(run_dir: Path | None) -> None:
    """Bring the stack up and print how to reach it and how to point Airflow at it."""
    from airflow_hoop.devstack import stack as devstack

    info = devstack.up(run_dir)
    console.print(f"Stack running in {info.run_dir}")
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


# -- demo ----------------------------------------------------------------------------------
@main.command()
@click.option(
    "--keep", is_flag=True, help="Leave the stack running afterwards and print how to reach it."
)
def demo(keep: bool) -> None:
    """Run example_dags/governed_etl.py on the embedded stack and show the ledger."""
    from airflow_hoop.demo import run_demo

    sys.exit(run_demo(console, keep=keep))


# -- audit ---------------------------------------------------------------------------------
@main.group()
def audit() -> None:
    """Read and verify the ledger."""


@audit.command("verify")
@click.option(
    "--stack",
    "stack_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Read the ledger of an embedded stack (its gateway and auditor key).",
)
@click.option("--gateway", "gateway_url", help="Gateway URL.")
@click.option(
    "--api-key", envvar="HOOP_API_KEY", help="Auditor API key (hpk_...); or $HOOP_API_KEY."
)
def audit_verify(stack_dir: Path | None, gateway_url: str | None, api_key: str | None) -> None:
    """Recompute the hash chain and name the first record that does not verify.

    Exit codes: 0 the ledger verifies; 1 a record does not verify (the first one is named);
    2 the ledger could not be read.
    """
    from airflow_hoop.client.http import GatewayClient
    from airflow_hoop.devstack.models import StackInfo
    from airflow_hoop.ledger.chain import verify_chain

    if stack_dir:
        info = StackInfo.load(stack_dir)
        gateway_url, api_key = info.gateway_url, info.auditor_api_key
    if not (gateway_url and api_key):
        raise click.UsageError("give --stack RUN_DIR, or --gateway URL with --api-key")
    key = api_key
    try:
        with GatewayClient(gateway_url, token=lambda: key) as client:
            report = verify_chain(client.iter_ledger())
    except HoopError as exc:
        console.print(f"[red]{exc}[/red]")
        sys.exit(2)
    console.print(report.summary(), style="green" if report.ok else "bold red")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
