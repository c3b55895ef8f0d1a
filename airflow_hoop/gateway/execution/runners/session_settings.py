"""A step's session settings (the hook's libpq ``options``), applied under its own session.

Each value goes to ``pg_catalog.set_config(name, value, false)`` as a bound parameter: the
server parses it with the setting's own input function (``invalid value for parameter
"statement_timeout"`` for anything else) and no value is ever part of SQL text. The names come
from the closed set of ``wire.session_settings.SessionSettings``, never from the request's text;
the connection's policy has already refused a name it does not allow (``targets.py``).

``application_name`` is a prefix: the step's own name follows it, so the database's views and
logs still name the step (``ledger/correlation.py``).

Each exec carries its hook's settings (none: the session's defaults), so two hooks of one step
sharing its database connection each get their own, as each would get its own connection
stock. Nothing is sent when they are what the session has already. Applied while a transaction
is open they are part of it (a rollback reverts them), so they are applied again on the next
exec rather than taken as applied.
"""

from __future__ import annotations

from typing import Any

import psycopg

from airflow_hoop.ledger.correlation import application_name
from airflow_hoop.wire.session_settings import SESSION_SETTING_NAMES, SessionSettings

#: Schema-qualified: a search_path the step set cannot put another set_config first.
_SET = "SELECT pg_catalog.set_config(%s, %s, false)"
#: Back to the session's default: its value at connection start (role and database defaults
#: included, the step's own application_name).
_RESET = (
    "SELECT pg_catalog.set_config(%s, (SELECT s.reset_val FROM pg_catalog.pg_settings s "
    "WHERE s.name OPERATOR(pg_catalog.=) %s), false)"
)


class SessionSettingsState:
    """What one step connection was last asked to set, and the step whose name it keeps."""

    def __init__(self, step_key: str | None) -> None:
        self._step_key = step_key
        #: The settings in force outside any transaction; None: unknown (applied inside one).
        self._applied: SessionSettings | None = _NONE

    def values(self, wanted: SessionSettings) -> list[tuple[str, str]]:
        """(name, value) pairs to set: the application_name prefix with the step's name."""
        pairs = []
        for name, value in wanted.items():
            if name == "application_name" and self._step_key is not None:
                value = application_name(self._step_key, prefix=value)
            pairs.append((name, value))
        return pairs

    async def apply(
        self, conn: psycopg.AsyncConnection[Any], wanted: SessionSettings | None
    ) -> None:
        """Make the session's settings those of this exec; raises psycopg.Error for a value
        PostgreSQL refuses. A setting an earlier exec of the step set and this one does not is
        reset to the session's own default (``reset_val``), as a new connection would have it.
        """
        wanted = wanted or _NONE
        if wanted == self._applied:
            return
        previous = self._applied
        stale = [
            name
            for name in SESSION_SETTING_NAMES
            if getattr(wanted, name) is None
            and (previous is None or getattr(previous, name) is not None)
        ]
        status = conn.info.transaction_status
        if status == psycopg.pq.TransactionStatus.INERROR:
            return  # nothing but ROLLBACK runs now; applied on the next exec that can run
        idle = status == psycopg.pq.TransactionStatus.IDLE
        # Unknown until all are set: a refused value may follow one that was set.
        self._applied = None
        switched = idle and not conn.autocommit
        if switched:
            # Outside a transaction, in a statement of its own: committed, never part of the
            # script's transaction (a client-side flag, no round trip).
            await conn.set_autocommit(True)
        try:
            async with conn.cursor() as cur:
                for name, value in self.values(wanted):
                    await cur.execute(_SET, (name, value), prepare=False)
                for name in stale:
                    await cur.execute(_RESET, (name, name), prepare=False)
        finally:
            if switched and not conn.broken:
                await conn.set_autocommit(False)
        self._applied = wanted if idle else None


_NONE = SessionSettings()
