"""``HoopAgentToolset``: common-ai's ``SQLToolset``, attributed and with writes approved at the gateway.

It wraps the toolset (never forks it): the calls still run through ``SQLToolset`` and its
``DbApiHook``, which for a ``hoop_postgres`` connection is ``HoopPostgresHook`` (every lookup and
query a governed statement of the step). Around each call it:

- sets the agent call (model, tool, digests of prompt and turn) that the hook sends with each
  statement, so the gateway records it in the statement's intent (``task/agent_call.py``);
- for a ``query`` that PostgreSQL's parser labels a write, when the call is not yet approved:
  asks the gateway, as the step, for a review bound to that exact statement, then raises
  pydantic-ai's ``ApprovalRequired`` so that ``AgentOperator`` parks the task through Airflow's
  tool approval (Airflow 3.3+). The decision reaches the gateway from the approver (Approvals
  tab, through the plugin), never from the task; the resumed call runs only if the gateway
  finds that review approved, unused, for this step and statement.

The label here only decides when to ask: the gateway labels again and runs an unapproved write
where PostgreSQL refuses it, whatever this wrapper or the task does (docs/agents.md).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from pydantic_ai.exceptions import ApprovalRequired
from pydantic_ai.toolsets import WrapperToolset

from airflow_hoop.agents.turns import agent_call
from airflow_hoop.defaults import AGENT_TOOL_CALL
from airflow_hoop.ledger.sql_label import label_sql
from airflow_hoop.task.agent_call import agent_call as attributed

log = logging.getLogger(__name__)

#: SQLToolset's tools that send SQL the agent wrote.
_SQL_TOOLS = frozenset({"query"})


@dataclass
class HoopAgentToolset(WrapperToolset[Any]):
    """Attribute every tool call to its model turn; ask the gateway to approve writes."""

    #: The ``hoop_postgres`` connection id the wrapped SQLToolset uses.
    conn_id: str = ""
    #: Record the prompt's and the turn's text in the ledger, not only their digests.
    record_text: bool = False
    #: Ask for a gateway approval before a write (False: the gateway refuses it unapproved).
    approve_writes: bool = True
    justification: str = "A write proposed by an LLM agent"

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: Any, tool: Any) -> Any:
        call = agent_call(ctx, name, record_text=self.record_text)
        sql = tool_args.get("sql") if name in _SQL_TOOLS else None
        if (
            self.approve_writes
            and isinstance(sql, str)
            and not ctx.tool_call_approved
            and label_sql(sql).label == "write"
        ):
            review_id = await asyncio.to_thread(self._request_review, sql)
            raise ApprovalRequired(metadata={"gateway_review": review_id})
        with attributed(call):
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)

    def _request_review(self, sql: str) -> str:
        """Ask the gateway, as the running step, for a review of exactly what the hook sends."""
        from airflow.sdk import get_current_context

        from airflow_hoop.hooks.postgres import HoopPostgresHook
        from airflow_hoop.operators.approval_request import ApprovalCommand, request_approval

        context = get_current_context()
        ti = context["ti"]
        hook = HoopPostgresHook(hoop_postgres_conn_id=self.conn_id)
        # SQLToolset sends hook.strip_sql_string(sql) without parameters (DbApiHook.run).
        script = hook.strip_sql_string(sql)
        conn_id = hook.hoop_conn_id or hook.connection.extra_dejson.get("hoop_conn_id")
        command = ApprovalCommand.of(hook._target(), [script], None, conn_id)
        map_index = getattr(ti, "map_index", None)
        created, _ = request_approval(
            context,
            command,
            target_task_id=str(ti.task_id),
            target_map_index=-1 if map_index is None else int(map_index),
            target_try_number=int(ti.try_number),
            justification=self.justification,
            context_extra={AGENT_TOOL_CALL: "query"},
        )
        log.info("agent write: gateway review %s (%s)", created.review.id, created.review.status)
        return created.review.id


def governed_sql_toolset(
    conn_id: str,
    *,
    record_text: bool = False,
    approve_writes: bool = True,
    justification: str = "A write proposed by an LLM agent",
    **sql_toolset_kwargs: Any,
) -> HoopAgentToolset:
    """common-ai's ``SQLToolset(conn_id, allow_writes=True, ...)`` wrapped in ``HoopAgentToolset``.

    ``allow_writes=True``: SQLToolset's parser check is not the boundary here; the gateway is.
    """
    from airflow.providers.common.ai.toolsets.sql import SQLToolset

    sql_toolset_kwargs.setdefault("allow_writes", True)
    return HoopAgentToolset(
        SQLToolset(conn_id, **sql_toolset_kwargs),
        conn_id=conn_id,
        record_text=record_text,
        approve_writes=approve_writes,
        justification=justification,
    )
