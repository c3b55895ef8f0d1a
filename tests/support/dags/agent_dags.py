"""DAGs of tests/integration/test_agents.py: common-ai agents with a scripted model.

The table ``agent_test_customers`` is seeded by the test. The gateway's rule ``test_agent*``
(writes need data-owners) covers every DAG here.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.ai.toolsets.sql import SQLToolset
from airflow.sdk import DAG

from airflow_hoop.agents.scripted import Answer, Call, ScriptedAgentOperator
from airflow_hoop.agents.toolset import governed_sql_toolset

TABLE = "agent_test_customers"
READ = f"SELECT id, name, email FROM {TABLE} ORDER BY id"
WRITE = f"UPDATE {TABLE} SET status = 'active' WHERE id = 2"
DEFAULTS = {"retries": 0}


def _last(results: list[str]) -> str:
    return "answer: " + (results[-1] if results else "")


with DAG("test_agent_reads", schedule=None, start_date=datetime(2026, 1, 1), default_args=DEFAULTS):
    ScriptedAgentOperator(
        model_name="scripted-test",
        task_id="ask",
        prompt="Who are our customers?",
        system_prompt="Answer from the warehouse.",
        toolsets=[governed_sql_toolset("warehouse_via_hoop")],
        script=[
            Call("list_tables"),
            Call("get_schema", {"table_name": TABLE}),
            Call("query", {"sql": READ}),
            Answer(_last),
        ],
        message_history="",
    )

# The task skips Airflow's approval: the stock SQLToolset with writes allowed, no wrapper.
with DAG(
    "test_agent_unapproved_write",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    default_args=DEFAULTS,
):
    ScriptedAgentOperator(
        model_name="scripted-test",
        task_id="fix",
        prompt="Fix customer 2.",
        system_prompt="Fix records.",
        toolsets=[SQLToolset("warehouse_via_hoop", allow_writes=True)],
        script=[Call("query", {"sql": WRITE}), Answer(_last)],
        message_history="",
    )
