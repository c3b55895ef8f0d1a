"""Governed agent steps with the common-ai provider (docs/agents.md).

``governed_sql_toolset(conn_id)`` is common-ai's own ``SQLToolset`` on a ``hoop_postgres``
connection, wrapped so that each tool call is recorded with the model and digests of the
prompt and turn that made it, and a write asks the gateway for an approval bound to its exact
statement before Airflow's tool approval pauses the task. Needs the ``agents`` extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HoopAgentToolset", "governed_sql_toolset"]


def __getattr__(name: str) -> Any:
    # pydantic-ai is imported when a DAG uses the toolset, not when airflow_hoop is.
    if name in __all__:
        from airflow_hoop.agents import toolset

        return getattr(toolset, name)
    raise AttributeError(name)
