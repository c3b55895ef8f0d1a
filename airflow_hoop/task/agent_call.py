"""The agent tool call a statement belongs to, for the gateway's record (docs/agents.md).

An agent toolset sets it around a tool call (``agents/toolset.py``); the DB-API connection
(``hooks/dbapi.py``) sends it with every statement of the call. A context variable, not a
global: pydantic-ai runs tools in worker threads with a copy of the caller's context
(``asyncio.to_thread``), and two agents in one process must not mix their calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from airflow_hoop.ledger.records import AgentCall

_current: ContextVar[AgentCall | None] = ContextVar("airflow_hoop_agent_call", default=None)


def current_agent_call() -> AgentCall | None:
    """The tool call being run in this context, or None outside an agent's tool call."""
    return _current.get()


@contextmanager
def agent_call(call: AgentCall) -> Iterator[None]:
    """Attribute every statement sent inside the block to ``call``."""
    token = _current.set(call)
    try:
        yield
    finally:
        _current.reset(token)
