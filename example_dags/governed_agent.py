"""An LLM agent that answers a question from the warehouse and proposes a fix that needs approval.

``ask_warehouse`` is common-ai's ``AgentOperator`` with its own ``SQLToolset`` on the
``warehouse_via_hoop`` connection (``governed_sql_toolset``): every schema lookup and query
the agent makes runs through the gateway as this step, under its own database user, masked
(the e-mail column never reaches the model) and recorded with the model's name and digests of
the prompt and of the turn that made the call. The agent's UPDATE is a write: the gateway's
rule for ``governed_agent`` asks one approval from ``data-owners``, bound to the exact
statement, and refuses it otherwise whatever the task does (docs/agents.md).

The model is scripted (pydantic-ai's ``FunctionModel``): no network, no API key. For a real
model, replace ``ScriptedAgentOperator(script=...)`` by ``AgentOperator(llm_conn_id=...)``.

``governed_agent_seed`` writes the table the agent reads (its own DAG: writes of
``governed_agent`` need approval) and triggers ``governed_agent``.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG

from airflow_hoop.agents.scripted import Answer, Call, ScriptedAgentOperator
from airflow_hoop.agents.toolset import governed_sql_toolset
from airflow_hoop.operators.postgres import HoopPostgresOperator

TABLE = "agent_customers"
#: The fix the agent proposes: a reviewer approves exactly this statement.
FIX = f"UPDATE {TABLE} SET status = 'active' WHERE id = 2 AND status = 'past_due'"


def _answer(results: list[str]) -> str:
    found = results[2] if len(results) > 2 else "(no result)"
    fix = results[3] if len(results) > 3 else "(not run)"
    return (
        f"Past-due customers on the pro plan: {found}. "
        f"Customer 2 paid last week; proposed fix `{FIX}`: {fix}"
    )


with DAG(
    dag_id="governed_agent_seed",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["airflow-hoop", "example", "agents"],
) as seed_dag:
    seed = HoopPostgresOperator(
        task_id="seed_customers",
        conn_id="warehouse_via_hoop",
        sql=[
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id int PRIMARY KEY, name text, email text,"
            " plan text, status text)",
            f"INSERT INTO {TABLE} VALUES (1, 'Acme', 'ops@acme.example', 'pro', 'active'),"
            " (2, 'Globex', 'billing@globex.example', 'pro', 'past_due'),"
            " (3, 'Initech', 'it@initech.example', 'free', 'past_due')"
            " ON CONFLICT (id) DO NOTHING",
        ],
        autocommit=True,
    )
    seed >> TriggerDagRunOperator(task_id="run_agent", trigger_dag_id="governed_agent")

with DAG(
    dag_id="governed_agent",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["airflow-hoop", "example", "agents"],
) as dag:
    ScriptedAgentOperator(
        task_id="ask_warehouse",
        prompt="Which pro customers are past due, and is there a record to fix?",
        system_prompt="You answer from the warehouse. Propose fixes as single UPDATE statements.",
        toolsets=[governed_sql_toolset("warehouse_via_hoop")],
        script=[
            Call("list_tables"),
            Call("get_schema", {"table_name": TABLE}),
            Call(
                "query",
                {
                    "sql": f"SELECT id, name, email, status FROM {TABLE}"
                    " WHERE plan = 'pro' AND status = 'past_due' ORDER BY id"
                },
            ),
            Call("query", {"sql": FIX}),
            Answer(_answer),
        ],
        message_history="",  # pushes the run's messages to XCom (what the model saw)
    )
