"""``airflow-hoop demo``: the governed ETL on the embedded stack, then what the ledger says."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from airflow_hoop.cli import demo_agent
from airflow_hoop.cli.tables import print_verification, steps_summary, steps_table
from airflow_hoop.client.http import GatewayClient
from airflow_hoop.devstack import airflow_env, stack
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.ledger.chain import StoredRecord
from airflow_hoop.ledger.records import LedgerRecord
from airflow_hoop.ledger.steps import steps_from_records
from airflow_hoop.ledger.verification import Verification
from airflow_hoop.ledger.verify import verify_chain

DEMO_DAG = "governed_etl"


def read_ledger(info: StackInfo) -> list[StoredRecord]:
    """All ledger records, through the gateway's read-only API, with the auditor key."""
    with GatewayClient(info.gateway_url, token=lambda: info.auditor_api_key) as client:
        return list(client.iter_ledger())


def show_ledger(
    console: Console, rows: list[StoredRecord], dag_id: str | None = None
) -> Verification:
    records = [LedgerRecord.model_validate_json(r.body) for r in rows]
    views = [v for v in steps_from_records(records) if dag_id is None or v.step.dag_id == dag_id]
    console.print(steps_table(views))
    console.print(steps_summary(views))
    report = verify_chain(rows)
    print_verification(console, report)
    return report


def run_demo(
    console: Console, *, keep: bool = False, dags_folder: Path = airflow_env.EXAMPLE_DAGS
) -> int:
    """Bring the stack up, run the example DAG with ``airflow dags test``, show the ledger."""
    started = time.monotonic()
    with console.status("Starting the embedded stack (PostgreSQL, OpenBao, gateway)..."):
        info = stack.up()
    console.print(f"Stack up in {time.monotonic() - started:.1f}s at {info.run_dir}")
    ok = False
    try:
        home = Path(info.run_dir) / "airflow"
        log = Path(info.run_dir) / "airflow.log"
        env = airflow_env.airflow_env(home, info, dags_folder)
        with console.status("Creating Airflow's metadata database..."):
            airflow_env.migrate(env, log=log)
        with console.status(f"Running `airflow dags test {DEMO_DAG}`..."):
            proc = airflow_env.dags_test(env, DEMO_DAG, log=log)
        if proc.returncode != 0:
            console.print(f"[red]The DAG run failed (exit {proc.returncode}); see {log}[/red]")
        agent_ok = _agent_part(console, env, info, log)
        rows = read_ledger(info)
        report = show_ledger(console, rows, DEMO_DAG)
        if agent_ok:
            show_ledger(console, rows, demo_agent.AGENT_DAG)
        ok = proc.returncode == 0 and report.ok and agent_ok
    finally:
        if keep:
            _print_reach(console, info)
        else:
            stack.down(info)
            console.print("Stack stopped and removed.")
    return 0 if ok else 1


def _agent_part(console: Console, env: dict[str, str], info: StackInfo, log: Path) -> bool:
    """The agent example, when the agents extra (common-ai) is installed."""
    import importlib.util

    if importlib.util.find_spec("airflow.providers.common.ai") is None:
        console.print("(agent example skipped: pip install 'airflow-hoop[agents]')")
        return True
    with console.status(f"Running the agent example ({demo_agent.AGENT_DAG})..."):
        return demo_agent.run_agent_demo(console, env, info, log)


def _print_reach(console: Console, info: StackInfo) -> None:
    console.print(
        "\nThe stack is still running (--keep):\n"
        f"  gateway      {info.gateway_url}  (log: {info.gateway_log})\n"
        f"  OpenBao      {info.bao_addr}\n"
        f"  PostgreSQL   psql 'host={info.pg_socket_dir} port={info.pg_port} user={info.pg_superuser} dbname={info.warehouse_db}'\n"
        f"  verify       airflow-hoop audit verify --stack {info.run_dir}\n"
        f"  stop         airflow-hoop stack down {info.run_dir}"
    )
