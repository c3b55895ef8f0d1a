"""What the ledger records of an agent's tool call: the model, and digests of prompt and turn.

Digests are SHA-256 of the canonical JSON of pydantic-ai's own message objects, so a reviewer
holding a transcript (``AgentOperator``'s ``message_history`` XCom, or the model provider's
log) can check it against the ledger. The text itself only with ``record_text``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_ai.messages import ModelResponse, ToolCallPart

from airflow_hoop.ledger.canonical import canonical, sha256_hex
from airflow_hoop.ledger.records import AgentCall

_TEXT_LIMIT = 20000


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _said(response: ModelResponse) -> list[Any]:
    """What the model said in a turn, part by part: kind, tool, arguments, text (no ids or
    timestamps, which differ between two runs of the same script)."""
    out: list[Any] = []
    for part in response.parts:
        if isinstance(part, ToolCallPart):
            out.append(["tool-call", part.tool_name, part.args_as_dict()])
        else:
            out.append([part.part_kind, _jsonable(getattr(part, "content", None))])
    return out


def _turn_of(messages: list[Any], tool_call_id: str | None) -> tuple[int, ModelResponse | None]:
    """The model response that made the call, and its index among the run's responses."""
    turn = -1
    for message in messages:
        if not isinstance(message, ModelResponse):
            continue
        turn += 1
        for part in message.parts:
            if isinstance(part, ToolCallPart) and part.tool_call_id == tool_call_id:
                return turn, message
    return max(turn, 0), None


def model_name(ctx: Any) -> str:
    model = getattr(ctx, "model", None)
    return str(getattr(model, "model_name", None) or type(model).__name__)[:200]


def agent_call(ctx: Any, tool: str, *, record_text: bool = False) -> AgentCall:
    """The ledger's view of the tool call ``ctx`` (pydantic-ai's ``RunContext``) is making."""
    prompt = _jsonable(getattr(ctx, "prompt", None))
    turn, response = _turn_of(list(getattr(ctx, "messages", []) or []), ctx.tool_call_id)
    said = _jsonable(_said(response)) if response is not None else None
    return AgentCall(
        model=model_name(ctx),
        tool=tool[:200],
        tool_call_id=str(ctx.tool_call_id or "")[:200],
        turn=turn,
        prompt_sha256=sha256_hex(canonical(prompt)),
        turn_sha256=sha256_hex(canonical(said)),
        approved_call=bool(getattr(ctx, "tool_call_approved", False)),
        prompt_text=json.dumps(prompt)[:_TEXT_LIMIT] if record_text else None,
        turn_text=json.dumps(said)[:_TEXT_LIMIT] if record_text else None,
    )
