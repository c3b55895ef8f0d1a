"""What one exec did on a target, and its text as hoop shows it (psql's layout).

Shared by the SQL and shell runners and by the session service that records the outcome.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from airflow_hoop.wire.sessions import Column

#: Commands whose tag psql prints after their RETURNING rows (hoop's text output).
_RETURNING_TAGS = ("INSERT", "UPDATE", "DELETE", "MERGE")


class ResultSet(BaseModel):
    """One statement's result (a script may hold several statements)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    columns: list[Column] | None = None
    rows: list[tuple[Any, ...]] = []
    rowcount: int = -1
    status_message: str | None = None
    truncated: bool = False
    #: The rows before masking, kept only when the policy lets the task have them.
    unmasked_rows: list[tuple[Any, ...]] | None = None


class RunOutcome(BaseModel):
    """What one exec did on the target. ``rows`` are Python values (encode for the wire)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    status: Literal["success", "failed"]
    exit_code: int
    columns: list[Column] | None = None
    rows: list[tuple[Any, ...]] = []
    rowcount: int = -1
    status_message: str | None = None
    error: str | None = None
    sqlstate: str | None = None
    duration_ms: float
    truncated: bool = False
    output: str = ""
    #: What the task gets when its masking policy allows unmasked results (else None).
    unmasked_rows: list[tuple[Any, ...]] | None = None
    unmasked_output: str | None = None


def render_output(sets: list[ResultSet]) -> str:
    """hoop's text output, as ``psql -A -F '\\t'`` prints it."""
    parts: list[str] = []
    for rs in sets:
        if rs.columns is None:
            if rs.status_message:
                parts.append(f"{rs.status_message}\n")
            continue
        lines = ["\t".join(c.name for c in rs.columns)]
        lines.extend("\t".join(_text(v) for v in row) for row in rs.rows)
        n = len(rs.rows)
        lines.append(f"({n} row{'' if n == 1 else 's'})")
        if rs.status_message and rs.status_message.split(" ", 1)[0] in _RETURNING_TAGS:
            lines.append(rs.status_message)  # psql prints the tag after RETURNING rows too
        parts.append("\n".join(lines) + "\n")
    return "".join(parts)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    return str(value)
