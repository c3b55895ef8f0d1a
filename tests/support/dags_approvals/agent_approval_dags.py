"""The DAG of tests/integration/test_agents.py's approved write: an agent proposes an UPDATE.

Gateway rule ``test_agent*``: writes need one approval from data-owners. The table is named
in ``dag_run.conf["table"]``; the scripted model calls the write tool once, then answers.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_hoop.agents.scripted import Answer, Call, ScriptedAgentOperator
from airflow_hoop.agents.toolset import governed_sql_toolset

with DAG(
    "test_agent_approval",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    default_args={"retries": 0},
):
    ScriptedAgentOperator(
        task_id="fix",
        prompt="Customer 2 paid: fix the record.",
        system_prompt="Fix records with single UPDATE statements.",
        toolsets=[governed_sql_toolset("warehouse_via_hoop")],
        script=[
            Call(
                "query",
                {"sql": "UPDATE agent_approval_customers SET status = 'active' WHERE id = 2"},
            ),
            Answer(lambda results: "done: " + (results[-1] if results else "")),
        ],
    )
