"""OpenLineage of governed SQL steps: the stock operator's datasets, plus the step's facet.

A real DAG (``airflow dags test``, tests/support/dags/dag_lineage.py) with the OpenLineage
provider's file transport: the stock ``SQLExecuteQueryOperator`` on a direct connection and
``HoopPostgresOperator`` through the gateway run the same SQL. Their COMPLETE events must name
the same input and output datasets (namespace ``postgres://host:port``, ``db.schema.table``);
the governed one carries the ``airflowHoop`` run facet whose step, database user and ledger
seqs are those of the ledger's own records.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import psycopg
import pytest
from support.airflow_fixtures import AirflowHome
from support.notification_support import wait_for

try:  # the ``test`` extra installs it; skip on a laptop without it, fail in CI
    import airflow.providers.openlineage  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("apache-airflow-providers-openlineage is not installed", allow_module_level=True)

from airflow_hoop.cli.demo import read_ledger
from airflow_hoop.devstack.database_setup import WAREHOUSE_WRITER
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.hooks.lineage import FACET_NAME
from airflow_hoop.ledger.records import (
    Checkpoint,
    CredentialIssued,
    LedgerRecord,
    SessionIntent,
    SessionResult,
)

pytestmark = pytest.mark.airflow

DAG = "test_lineage"
TABLES = ("lineage_orders", "lineage_rates", "lineage_out")


@pytest.fixture(scope="module")
def lineage_run(
    airflow_home: AirflowHome, stack: StackInfo, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, str, list[dict[str, Any]]]:
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
        conn.execute("CREATE TABLE lineage_orders (id int, amount numeric)")
        conn.execute("CREATE TABLE lineage_rates (id int, rate numeric)")
        conn.execute("CREATE TABLE lineage_out (id int, total numeric)")
        conn.execute("INSERT INTO lineage_orders VALUES (1, 10), (2, 20)")
        conn.execute("INSERT INTO lineage_rates VALUES (1, 1.5), (2, 2)")
        for table in TABLES:
            conn.execute(f"ALTER TABLE {table} OWNER TO {WAREHOUSE_WRITER}")
    events_file = tmp_path_factory.mktemp("openlineage") / "events.jsonl"
    transport = {"type": "file", "log_file_path": str(events_file), "append": True}
    env = {
        **airflow_home.env,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "airflow-hoop-tests",
    }
    proc = AirflowHome(airflow_home.home, env).dags_test(DAG)
    run_id = airflow_home.latest_run(DAG)
    text = events_file.read_text() if events_file.exists() else ""
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    return proc, run_id, events


def _complete(events: list[dict[str, Any]], task: str) -> dict[str, Any]:
    found = [
        e
        for e in events
        if e.get("eventType") == "COMPLETE" and e["job"]["name"] == f"{DAG}.{task}"
    ]
    assert len(found) == 1, [(e.get("eventType"), e["job"]["name"]) for e in events]
    return found[0]


def _datasets(event: dict[str, Any], side: str) -> set[tuple[str, str]]:
    return {(d["namespace"], d["name"]) for d in event[side]}


def test_both_tasks_succeed_and_emit_events(lineage_run, airflow_home):
    proc, run_id, events = lineage_run
    states = airflow_home.task_states(DAG, run_id)
    assert states == {"direct": "success", "governed": "success"}, proc.stdout[-3000:]
    assert events, f"no OpenLineage event was written: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"


def test_governed_step_names_the_datasets_the_stock_operator_names(lineage_run, stack):
    _, _, events = lineage_run
    direct, governed = _complete(events, "direct"), _complete(events, "governed")
    namespace = f"postgres://127.0.0.1:{stack.pg_port}"
    expected_inputs = {
        (namespace, f"{stack.warehouse_db}.public.lineage_orders"),
        (namespace, f"{stack.warehouse_db}.public.lineage_rates"),
    }
    expected_outputs = {(namespace, f"{stack.warehouse_db}.public.lineage_out")}
    # The stock lineage first (the list's SELECT may add lineage_out as an input).
    assert expected_inputs <= _datasets(direct, "inputs")
    assert _datasets(direct, "outputs") == expected_outputs
    assert _datasets(governed, "inputs") == _datasets(direct, "inputs")
    assert _datasets(governed, "outputs") == _datasets(direct, "outputs")
    assert FACET_NAME not in direct["run"]["facets"]


def _schemas(event: dict[str, Any], side: str) -> dict[str, Any]:
    return {d["name"]: d.get("facets", {}).get("schema", {}).get("fields") for d in event[side]}


def test_governed_datasets_carry_the_schema_facets_the_stock_lineage_reads(lineage_run, stack):
    """The stock lineage reads column schemas from information_schema; the governed step reads
    them through the gateway, as itself, before it ends: the same facets."""
    _, run_id, events = lineage_run
    direct, governed = _complete(events, "direct"), _complete(events, "governed")
    for side in ("inputs", "outputs"):
        assert _schemas(direct, side) and all(_schemas(direct, side).values()), direct[side]
        assert _schemas(governed, side) == _schemas(direct, side)
    orders = _schemas(governed, "inputs")[f"{stack.warehouse_db}.public.lineage_orders"]
    assert [(f["name"], f["type"]) for f in orders] == [("id", "int4"), ("amount", "numeric")]
    # The schema query is the step's own recorded read, not a side door.
    intents = [
        r.body
        for r in (LedgerRecord.model_validate_json(x.body) for x in read_ledger(stack))
        if r.step is not None and r.step.run_id == run_id and isinstance(r.body, SessionIntent)
    ]
    assert any("information_schema.columns" in i.script for i in intents)


def test_the_facet_names_the_step_its_user_and_its_ledger_records(lineage_run, stack):
    _, run_id, events = lineage_run
    facet = _complete(events, "governed")["run"]["facets"][FACET_NAME]
    records = [LedgerRecord.model_validate_json(r.body) for r in read_ledger(stack)]
    mine = [
        r
        for r in records
        if r.step is not None and r.step.dag_id == DAG and r.step.run_id == run_id
    ]
    assert mine and all(r.step and r.step.task_id == "governed" for r in mine)
    step = mine[0].step
    assert step is not None
    assert (facet["dag_id"], facet["task_id"], facet["run_id"]) == (DAG, "governed", run_id)
    assert (facet["try_number"], facet["map_index"]) == (step.try_number, step.map_index)
    assert facet["step_key"] == step.key
    issued = [r.body.db_user for r in mine if isinstance(r.body, CredentialIssued)]
    assert facet["db_users"] == issued and len(issued) == 1
    intents = [r.seq for r in mine if isinstance(r.body, SessionIntent)]
    results = [r.seq for r in mine if isinstance(r.body, SessionResult)]
    assert facet["intent_seqs"] == intents and len(intents) >= 2
    assert facet["result_seqs"] == results
    assert facet["last_seq"] == max(intents + results)
    assert facet["_schemaURL"].startswith("urn:airflow-hoop:")


def test_the_facet_names_the_covering_checkpoint_or_when_it_is_due(lineage_run, stack):
    """The step's end tells the task the newest checkpoint and the policy's deadline: the
    facet names the covering checkpoint, or promises one by ``checkpoint_due_by``. The promise
    is checked here: by then, a signed checkpoint after ``last_seq`` covers it."""
    _, _, events = lineage_run
    facet = _complete(events, "governed")["run"]["facets"][FACET_NAME]
    last = facet["last_seq"]
    assert f"after_seq={last}&limit=1" in facet["checkpoint_lookup"]
    if facet["checkpoint_status"] == "covered":
        deadline = None
        wanted = facet["covering_checkpoint_seq"]
    else:
        assert facet["checkpoint_status"] == "pending", facet
        assert "covering_checkpoint_seq" not in facet  # OpenLineage drops null fields
        assert facet["checkpoint_policy"]["interval_seconds"] > 0
        deadline = datetime.fromisoformat(facet["checkpoint_due_by"])
        wanted = None

    def covering() -> Checkpoint | None:
        for stored in read_ledger(stack):
            record = LedgerRecord.model_validate_json(stored.body)
            if record.seq > last and isinstance(record.body, Checkpoint):
                assert wanted is None or record.seq == wanted
                return record.body
        return None

    found = wait_for(covering, timeout=60, what="a checkpoint after the step's last record")
    assert found.statement.first_seq <= last <= found.statement.last_seq
    if deadline is not None:
        assert found.statement.time <= deadline, "signed after the facet's promise"


def test_events_hold_no_secret(lineage_run, stack):
    _, _, events = lineage_run
    text = json.dumps(events)
    for secret in (stack.bao_root_token, stack.auditor_api_key, stack.approver_api_key):
        assert secret and secret not in text
