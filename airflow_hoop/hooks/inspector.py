"""Schema introspection over the gateway, for callers that expect a SQLAlchemy inspector.

common-ai's ``SQLToolset`` (and other ``DbApiHook`` users) call ``hook.inspector``'s
``get_table_names`` and ``get_columns``, which SQLAlchemy answers over its own connection.
``HoopPostgresHook`` has no engine (a direct connection would bypass the gateway), so these
read ``information_schema`` through the gateway as the running step: each lookup is a governed,
recorded, read-only statement of the step, with bound parameters.
"""

from __future__ import annotations

from typing import Any, Protocol

_TABLES = (
    "SELECT table_name FROM information_schema.tables"
    " WHERE table_schema = COALESCE(%s, current_schema())"
    " AND table_type IN ('BASE TABLE', 'VIEW') ORDER BY table_name"
)
_COLUMNS = (
    "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
    " WHERE table_schema = COALESCE(%s, current_schema()) AND table_name = %s"
    " ORDER BY ordinal_position"
)


class _Records(Protocol):
    def get_records(self, sql: str, parameters: Any = None) -> Any: ...


class GatewayInspector:
    """The subset of ``sqlalchemy.engine.Inspector`` that SQL toolsets use."""

    def __init__(self, hook: _Records) -> None:
        self.hook = hook

    def get_table_names(self, schema: str | None = None) -> list[str]:
        """Tables and views of ``schema`` (the connection's current schema when None)."""
        return [str(r[0]) for r in self.hook.get_records(_TABLES, (schema,))]

    def get_columns(self, table_name: str, schema: str | None = None) -> list[dict[str, Any]]:
        """Columns in order, as ``{"name", "type", "nullable"}`` (type: PostgreSQL's name)."""
        rows = self.hook.get_records(_COLUMNS, (schema, table_name))
        return [{"name": r[0], "type": r[1], "nullable": r[2] == "YES"} for r in rows]
