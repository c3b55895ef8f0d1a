"""OpenLineage for governed SQL steps (``apache-airflow-providers-openlineage``, optional).

A governed step emits what Airflow's SQL lineage emits for the stock operator: inputs and
outputs from the provider's SQL parser, in the target database's namespace
(``postgres://host:port``, datasets ``database.schema.table``), plus one run facet,
``airflowHoop``, naming the step (dag, task, run, try, map index, step key), the database
users the gateway issued it, the ledger seqs of its records and their checkpoint: the covering
one if it was signed when the step ended, else the time by which the gateway's policy signs
it and how to look it up (docs/correlation.md says why the task does not wait for it).

The Airflow side knows the gateway connection, not the target database behind it: the
``hoop_postgres`` connection's extra says where it is (``lineage_authority``: ``host:port``,
``lineage_database``), as the stock hook reads it from its own connection. Without them the
namespace is ``hoop://<gateway connection>``. The COMPLETE event's datasets carry the schema
facets the stock lineage gets from ``information_schema``: the query runs through the gateway
as the step, at the end of ``execute`` (once the step has ended the gateway refuses it).

Imported only by the hook's and operator's OpenLineage methods, which the provider calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attr
from openlineage.client.facet_v2 import RunFacet

from airflow_hoop.ledger.records import StepRef
from airflow_hoop.task.step_evidence import evidence_for

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.providers.openlineage.sqlparser import DatabaseInfo

#: The run facet's key in an event's ``run.facets``.
FACET_NAME = "airflowHoop"
DEFAULT_SCHEMA = "public"
_SCHEMA_URL = "urn:airflow-hoop:openlineage:AirflowHoopRunFacet:1-0-0"
#: How an auditor finds and checks the covering checkpoint (steps may not read the ledger).
CHECKPOINT_LOOKUP = (
    "GET /api/airflow-hoop/ledger/checkpoints?after_seq={last_seq}&limit=1 (auditor key): the "
    "first checkpoint after last_seq signs it; airflow-hoop audit verify checks the chain and "
    "every signature"
)


@attr.define
class AirflowHoopRunFacet(RunFacet):
    """The governed step behind an OpenLineage run: who it was, and where its records are."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int
    step_key: str
    #: The database users the gateway issued the step (its own, short-lived).
    db_users: list[str] = attr.field(factory=list)
    #: Ledger seqs of the step's session intent and result records, in order.
    intent_seqs: list[int] = attr.field(factory=list)
    result_seqs: list[int] = attr.field(factory=list)
    last_seq: int | None = None
    #: Seq of the signed checkpoint covering ``last_seq`` when the step ended; None: none yet.
    covering_checkpoint_seq: int | None = None
    #: "covered", "pending" (signed by ``checkpoint_due_by``), "off" or "unknown".
    checkpoint_status: str = "unknown"
    #: Pending: the gateway's policy signs a checkpoint covering ``last_seq`` by then.
    checkpoint_due_by: str | None = None
    #: The policy behind that promise: ``every_records`` and ``interval_seconds``.
    checkpoint_policy: dict[str, float] | None = None
    checkpoint_lookup: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return _SCHEMA_URL


def database_info(extra: dict[str, Any], gateway_connection: str) -> DatabaseInfo:
    """The target database as OpenLineage names it (as ``PostgresHook`` would name it)."""
    from airflow.providers.openlineage.sqlparser import DatabaseInfo

    authority = extra.get("lineage_authority")
    database = extra.get("lineage_database") or gateway_connection
    if not authority:
        return DatabaseInfo(scheme="hoop", authority=gateway_connection, database=database)
    return DatabaseInfo(scheme="postgres", authority=str(authority), database=database)


def lineage_enabled() -> bool:
    """Is OpenLineage configured in this process (provider installed, a transport set)?"""
    try:
        from airflow.providers.openlineage import conf
    except ImportError:
        return False
    return not conf.is_disabled()


def sql_lineage(hook: Any, sql: Any, *, with_schemas: bool = False) -> OperatorLineage:
    """Inputs and outputs of ``sql`` by the provider's SQL parser.

    ``with_schemas``: also the column schema facets, from the ``information_schema`` query
    the stock lineage runs, sent through the gateway as the step (a recorded read). Only
    while the step is live: the operator calls it at the end of ``execute``, before the step
    ends, and reuses the result for the COMPLETE event.
    """
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.providers.openlineage.sqlparser import SQLParser

    statements = [sql] if isinstance(sql, str) else sql
    if not isinstance(statements, list) or not all(
        isinstance(s, str) and s.strip() for s in statements
    ):
        return OperatorLineage()
    connection = hook.connection
    parser = SQLParser(
        dialect=hook.get_openlineage_database_dialect(connection),
        default_schema=hook.get_openlineage_default_schema(),
    )
    lineage: OperatorLineage = parser.generate_openlineage_metadata_from_sql(
        sql=sql,
        hook=hook,
        database_info=hook.get_openlineage_database_info(connection),
        database=None,  # the target's database (database_info), not the gateway connection
        sqlalchemy_engine=None,
        use_connection=with_schemas,
    )
    return lineage


def step_facet(step: StepRef) -> AirflowHoopRunFacet:
    """The facet of ``step`` from what the gateway answered its statements in this process."""
    seen = evidence_for(step)
    facet = AirflowHoopRunFacet(
        dag_id=step.dag_id,
        task_id=step.task_id,
        run_id=step.run_id,
        try_number=step.try_number,
        map_index=step.map_index,
        step_key=step.key,
        db_users=seen.db_users if seen else [],
        intent_seqs=seen.intent_seqs if seen else [],
        result_seqs=seen.result_seqs if seen else [],
        last_seq=seen.last_seq if seen else None,
    )
    last, note = facet.last_seq, seen.checkpoint if seen else None
    if last is None:
        return facet
    facet.checkpoint_lookup = CHECKPOINT_LOOKUP.format(last_seq=last)
    if note is None:  # checkpoints off, or the step's end was not answered
        facet.checkpoint_status = "unknown"
        return facet
    if note.checkpoint_seq is not None and note.covers_through_seq >= last:
        facet.covering_checkpoint_seq = note.checkpoint_seq
        facet.checkpoint_status = "covered"
        return facet
    # Not yet signed when the step ended: the policy's promise, checkable later.
    facet.checkpoint_status = "pending"
    facet.checkpoint_due_by = note.due_by.isoformat()
    facet.checkpoint_policy = {
        "every_records": note.every_records,
        "interval_seconds": note.interval_seconds,
    }
    return facet


def step_lineage(task_instance: Any) -> OperatorLineage:
    """The run facet of the task instance's step (its database-specific lineage)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    map_index = getattr(task_instance, "map_index", None)
    # The same fields, read the same way, as the step's identity (task/identity.py).
    step = StepRef(
        dag_id=task_instance.dag_id,
        task_id=task_instance.task_id,
        run_id=task_instance.run_id,
        try_number=int(getattr(task_instance, "try_number", 1) or 1),
        map_index=int(map_index) if map_index is not None else -1,
    )
    return OperatorLineage(run_facets={FACET_NAME: step_facet(step)})
