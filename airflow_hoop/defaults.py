"""Defaults the operators, sensor, hooks and trigger share, importable at DAG parse.

Nothing here imports the runtime (Vault, the gateway client, pydantic wire models): a DAG
file that uses the operators pays for those only in the task that runs them, not in every
parse by the dag-processor and not in the parse that runs each callback.
"""

from __future__ import annotations

#: The ``hoop`` connection (gateway URL and Vault login) when an operator names none.
DEFAULT_HOOP_CONN_ID = "hoop_default"
#: Seconds between two looks of a waiting approval at its review (sensor, trigger, operators).
DEFAULT_POLL_INTERVAL = 5.0
#: A review's context key marking an agent's tool call paused by Airflow's tool approval: the
#: Approvals tab answers that pause with the gateway's decision (plugins/agent_pause.py).
AGENT_TOOL_CALL = "agent_tool_call"
