"""A scripted model for the demo, the example DAG, the tests and the bench: no network, no key.

pydantic-ai's ``FunctionModel`` answers each model turn from a fixed script: turn *n* of the
run plays step *n* (a tool call, or the final answer, which may quote the tool results so
far). ``ScriptedAgentOperator`` is common-ai's ``AgentOperator`` with that model in place of
the one its ``llm_conn_id`` names; everything else (toolsets, tool approval, masking) is the
provider's. To use a real model, use ``AgentOperator(llm_conn_id=...)`` instead (docs/agents.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from airflow.providers.common.ai.hooks.pydantic_ai import PydanticAIHook
from airflow.providers.common.ai.operators.agent import AgentOperator
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

DEFAULT_MODEL_NAME = "scripted-analyst"


@dataclass(frozen=True)
class Call:
    """A model turn that calls one tool."""

    tool: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """The final model turn: text, or a function of the tool results so far (as text)."""

    text: str | Callable[[list[str]], str]


Step = Call | Answer


def tool_results(messages: Sequence[ModelMessage]) -> list[str]:
    """What the tools returned (or the retry prompts of failed calls), in order, as text."""
    out: list[str] = []
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, ToolReturnPart):
                    out.append(part.model_response_str())
                elif isinstance(part, RetryPromptPart):
                    out.append(part.model_response())
    return out


class ScriptedModelHook(PydanticAIHook):
    """A ``PydanticAIHook`` whose model is a ``FunctionModel`` playing ``script``."""

    def __init__(self, script: Sequence[Step], model_name: str = DEFAULT_MODEL_NAME) -> None:
        super().__init__(llm_conn_id="scripted")
        self.script = list(script)
        self.model_name = model_name

    def get_conn(self) -> Any:
        return FunctionModel(self._respond, model_name=self.model_name)

    def _respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        turn = sum(isinstance(m, ModelResponse) for m in messages)
        step = self.script[min(turn, len(self.script) - 1)]
        if isinstance(step, Call):
            return ModelResponse(parts=[ToolCallPart(step.tool, step.args)])
        text = step.text if isinstance(step.text, str) else step.text(tool_results(messages))
        return ModelResponse(parts=[TextPart(text)])


class ScriptedAgentOperator(AgentOperator):
    """``AgentOperator`` whose model plays ``script`` (no LLM connection is read)."""

    def __init__(
        self, *, script: Sequence[Step], model_name: str = DEFAULT_MODEL_NAME, **kwargs: Any
    ) -> None:
        kwargs.setdefault("llm_conn_id", "scripted")
        super().__init__(**kwargs)
        self.script = list(script)
        self.model_name = model_name

    @cached_property
    def llm_hook(self) -> PydanticAIHook:
        return ScriptedModelHook(self.script, self.model_name)
