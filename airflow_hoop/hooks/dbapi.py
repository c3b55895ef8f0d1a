"""A DB-API 2.0 connection whose statements run on the gateway, not on the worker.

``DbApiHook.run``, pandas and the stock ``SQLExecuteQueryOperator`` only need cursor,
execute, description, rowcount, fetch*, commit, rollback and close. Each ``execute`` is one
``POST /api/sessions`` of the step; the gateway keeps one database connection per step, so a
transaction spans calls exactly as with a direct connection.

Against a plain hoop.dev gateway (``gateway_kind`` ``hoop.dev``) the same calls work with less:
rows are read back from psql's text output (strings, NULL and '' both ``None``, see
``client.hoop_text``), parameters are refused (hoop cannot bind them and we never format values
into SQL), and each ``execute`` is its own psql session that commits on its own, so ``commit``
and ``rollback`` do nothing. docs/hoop.md lists what holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from airflow_hoop.client.hoop_text import HoopTextError, error_text, parse_psql_output
from airflow_hoop.errors import (
    BadRequestError,
    CommandFailedError,
    PolicyRefusedError,
    SessionKilledError,
)
from airflow_hoop.task.agent_call import current_agent_call
from airflow_hoop.task.step_evidence import note_exec
from airflow_hoop.task.step_session import GovernedStep
from airflow_hoop.wire.session_settings import SessionSettings
from airflow_hoop.wire.sessions import ExecExtension, ExecRequest, ExecResponse
from airflow_hoop.wire.values import decode_value, encode_parameters

_TX_CONTROL = re.compile(r"^\s*(COMMIT|ROLLBACK)\s*;?\s*$", re.IGNORECASE)


class GatewayConnection:
    """DB-API connection bound to one governed step and one gateway connection name.

    ``session_settings`` (the hook's libpq ``options``) go with every exec; the gateway
    applies them to the step's database session before the script.
    """

    def __init__(
        self,
        step: GovernedStep,
        connection: str,
        session_settings: SessionSettings | None = None,
    ) -> None:
        self.step = step
        self.connection = connection
        self.session_settings = session_settings
        self.autocommit = False
        self.closed = False
        self._pending = False
        self.notices: list[str] = []

    def cursor(self) -> GatewayCursor:
        return GatewayCursor(self)

    def commit(self) -> None:
        if self._pending:
            self._send("COMMIT", None)

    def rollback(self) -> None:
        if self._pending:
            self._send("ROLLBACK", None)

    def close(self) -> None:
        # As with a direct connection, closing discards what was not committed.
        if not self.closed and self._pending:
            self.rollback()
        self.closed = True

    @property
    def hoop_dev(self) -> bool:
        """The step talks to a plain hoop.dev gateway (text rows, no parameters)."""
        return self.step.config.hoop_dev

    def _send(self, script: str, parameters: Any) -> ExecResponse:
        identity = self.step.step
        if self.hoop_dev and parameters is not None:
            raise BadRequestError(
                "a hoop.dev gateway cannot bind query parameters (its exec API has no field "
                "for them) and airflow-hoop never formats values into SQL text",
                "run this step through the airflow-hoop gateway (gateway_kind airflow-hoop), "
                "or send SQL without parameters",
            )
        if self.hoop_dev and self.session_settings is not None:
            raise BadRequestError(
                "a hoop.dev gateway cannot apply session settings (its exec API has no field "
                "for them), and airflow-hoop never drops them silently",
                "run this step through the airflow-hoop gateway, or drop the hook's options",
            )
        metadata = identity.metadata()
        if self.hoop_dev and identity.triggered_by:
            # No Vault identity on hoop.dev: metadata and correlation_id are all it records.
            metadata["triggered_by"] = identity.triggered_by[:2000]
        else:
            metadata.pop("triggered_by", None)
        request = ExecRequest(
            connection=self.connection,
            script=script,
            metadata=metadata,
            correlation_id=identity.correlation_id,
            airflow_hoop=None
            if self.hoop_dev
            else ExecExtension(
                parameters=encode_parameters(parameters),
                autocommit=self.autocommit,
                session_settings=self.session_settings,
                # An agent's tool call: its statement, not the COMMIT that closes it.
                agent=None if _TX_CONTROL.match(script) else current_agent_call(),
            ),
        )
        self.step.used_gateway = True
        response = self.step.client.exec(
            request, on_poll=lambda info: setattr(self.step, "running_session", info.id)
        )
        self.step.running_session = None
        if response.airflow_hoop is not None:  # its seqs and user, for the lineage facet
            note_exec(identity, response.airflow_hoop)
        if self.hoop_dev or _TX_CONTROL.match(script) or self.autocommit:
            # hoop.dev: every session is a psql process that commits on its own.
            self._pending = False
        elif response.output_status == "success":
            self._pending = True
        if parameters is not None and response.airflow_hoop is None and not response.has_review:
            raise BadRequestError(
                f"the gateway answered session {response.session_id} without the airflow_hoop "
                "extension, so it did not bind the parameters: it is not an airflow-hoop gateway",
                "set gateway_kind hoop.dev on the 'hoop' connection and send SQL without "
                "parameters, or point it at the airflow-hoop gateway",
            )
        _raise_for(response)
        return response


class GatewayCursor:
    """DB-API cursor: results arrive typed (``airflow_hoop`` extension) and are decoded back."""

    arraysize = 1

    def __init__(self, connection: GatewayConnection) -> None:
        self.connection = connection
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1
        self.statusmessage: str | None = None
        self.db_user: str | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._pos = 0

    def execute(
        self, operation: str, parameters: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> GatewayCursor:
        response = self.connection._send(operation, parameters)
        typed = response.airflow_hoop
        if typed is None:
            self._load_text(response, operation)
            return self
        self.description = (
            [(c.name, c.type_code, None, None, None, None, None) for c in typed.columns]
            if typed.columns is not None
            else None
        )
        self._rows = [tuple(decode_value(v) for v in row) for row in typed.rows]
        self._pos = 0
        self.rowcount = typed.rowcount
        self.statusmessage = typed.status_message
        self.db_user = typed.db_user
        return self

    def _load_text(self, response: ExecResponse, operation: str) -> None:
        """Rows from hoop's psql text output: strings, checked against psql's row counts."""
        if response.truncated:
            raise HoopTextError(
                f"the gateway truncated the output of session {response.session_id}, so its "
                "rows are incomplete",
                "select fewer rows, or use the airflow-hoop gateway",
            )
        last = parse_psql_output(response.output, operation).last
        self._pos = 0
        self.db_user = None
        if last is None:
            self.description, self._rows, self.rowcount, self.statusmessage = None, [], -1, None
            return
        self.description = (
            [(name, None, None, None, None, None, None) for name in last.columns]
            if last.columns is not None
            else None
        )
        self._rows = [tuple(row) for row in last.rows]
        self.rowcount = last.rowcount
        self.statusmessage = last.status_message

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> None:
        total = 0
        for parameters in seq_of_parameters:
            self.execute(operation, parameters)
            total += max(self.rowcount, 0)
        self.rowcount = total

    def fetchone(self) -> tuple[Any, ...] | None:
        self._need_result()
        if self._pos >= len(self._rows):
            return None
        row = self._rows[self._pos]
        self._pos += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        self._need_result()
        size = size or self.arraysize
        rows = self._rows[self._pos : self._pos + size]
        self._pos += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        self._need_result()
        rows = self._rows[self._pos :]
        self._pos = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        self._rows = []

    def setinputsizes(self, sizes: Any) -> None:  # DB-API: may do nothing
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass

    def _need_result(self) -> None:
        if self.description is None:
            # Same message class as psycopg: fetching from a statement that returns no rows.
            raise CommandFailedError(
                "the last statement returned no rows to fetch", "fetch only after a query"
            )


def _raise_for(response: ExecResponse) -> None:
    if response.has_review:
        raise BadRequestError(
            f"the gateway holds session {response.session_id} for review: {response.output}",
            "have the session approved, then re-run the task",
        )
    if response.output_status == "success" and response.exit_code in (0, None):
        return
    if response.exit_code == -2 and "kill" in response.output.lower():
        raise SessionKilledError(f"session {response.session_id} was killed: {response.output}")
    if response.output_status == "blocked":
        # hoop.dev's AI session analyzer (exit code 254): nothing ran.
        raise PolicyRefusedError(
            f"the gateway blocked session {response.session_id}: {response.output.strip()}",
            "ask the gateway's administrators about the rule that blocked it",
        )
    if response.exit_code == -2:
        # hoop: the gateway could not obtain an exit code (agent offline, transport error).
        raise CommandFailedError(
            f"the gateway could not obtain an exit code for session {response.session_id} "
            f"(exit code -2): {response.output.strip()[:2000]}",
            "check that the gateway's agent is online, then re-run the task",
        )
    detail = error_text(response.output) or response.output.strip()
    raise CommandFailedError(
        f"statement failed on the target (session {response.session_id}, exit code "
        f"{response.exit_code}): {detail}"
    )
