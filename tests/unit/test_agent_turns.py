"""What the ledger records of an agent's tool call (agents/turns.py): digests, not text."""

from __future__ import annotations

import pytest

pytest.importorskip("airflow.providers.common.ai", reason="the agents extra is not installed")

from pydantic_ai import RunContext
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, ToolCallPart, UserPromptPart
from pydantic_ai.models.function import FunctionModel
from pydantic_ai.usage import RunUsage

from airflow_hoop.agents.turns import agent_call
from airflow_hoop.ledger.records import SessionIntent


def _ctx(sql: str, call_id: str = "c1", prompt: str = "Who is past due?") -> RunContext:
    model = FunctionModel(lambda m, i: ModelResponse(parts=[TextPart("x")]), model_name="m-1")
    messages = [
        ModelRequest(parts=[UserPromptPart(prompt)]),
        ModelResponse(parts=[ToolCallPart("list_tables", {}, tool_call_id="c0")]),
        ModelResponse(parts=[ToolCallPart("query", {"sql": sql}, tool_call_id=call_id)]),
    ]
    return RunContext(
        deps=None,
        model=model,
        usage=RunUsage(),
        prompt=prompt,
        messages=messages,
        tool_call_id=call_id,
        tool_name="query",
    )


def test_the_call_names_model_tool_and_turn_and_keeps_no_text() -> None:
    call = agent_call(_ctx("SELECT 1"), "query")
    assert (call.model, call.tool, call.tool_call_id, call.turn) == ("m-1", "query", "c1", 1)
    assert call.prompt_text is None and call.turn_text is None
    assert "SELECT 1" not in call.model_dump_json()  # the turn's text is only digested


def test_digests_follow_what_was_said_not_ids_or_times() -> None:
    a, b = agent_call(_ctx("SELECT 1"), "query"), agent_call(_ctx("SELECT 1", "other"), "query")
    assert (a.prompt_sha256, a.turn_sha256) == (b.prompt_sha256, b.turn_sha256)
    changed_sql = agent_call(_ctx("SELECT 2"), "query")
    changed_prompt = agent_call(_ctx("SELECT 1", prompt="Who paid?"), "query")
    assert changed_sql.turn_sha256 != a.turn_sha256
    assert changed_prompt.prompt_sha256 != a.prompt_sha256


def test_text_is_recorded_only_when_asked() -> None:
    call = agent_call(_ctx("SELECT 1"), "query", record_text=True)
    assert call.prompt_text == '"Who is past due?"' and "SELECT 1" in (call.turn_text or "")


def test_an_intent_without_an_agent_keeps_its_bytes() -> None:
    intent = SessionIntent(
        session_id="s", connection="w", script="SELECT 1", script_sha256="0" * 64
    )
    assert "agent" not in intent.model_dump(mode="json")
    with_agent = intent.model_copy(update={"agent": agent_call(_ctx("SELECT 1"), "query")})
    assert with_agent.model_dump(mode="json")["agent"]["tool"] == "query"
