"""Run SQL on a target Postgres as the step's dynamic user, one connection per step.

The connection is not in autocommit mode, so a transaction spans several execs of a step
exactly as with a direct DB-API connection; ``COMMIT``/``ROLLBACK`` scripts end it. An
autocommit exec with no transaction open runs in autocommit mode for that exec only (one round
trip instead of BEGIN, statement, COMMIT).

A read-only runner (the step's READ user) runs every script in a read-only transaction it
opens itself, one statement at a time, all in one pipeline (``read_only.py``).

Correlation (docs/correlation.md): the session's ``application_name`` names the step, and every
script statement goes out behind a comment naming the step and its intent record's seq
(``ledger/correlation.py``); the runner's own statements (BEGIN, mark, guard, COMMIT) carry
none. Both cost nothing extra on the wire: a startup parameter and a few bytes of text.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

import psycopg
from pydantic import SecretStr

from airflow_hoop.errors import HoopError
from airflow_hoop.gateway.execution.runners import read_only
from airflow_hoop.gateway.execution.runners.outcome import ResultSet, RunOutcome, render_output
from airflow_hoop.gateway.execution.runners.session_settings import SessionSettingsState
from airflow_hoop.gateway.masking.engine import ResultMasker
from airflow_hoop.gateway.masking.methods import MaskingError
from airflow_hoop.gateway.masking.postgres import SourceCache, column_infos, mask_result
from airflow_hoop.gateway.settings import PostgresConnection
from airflow_hoop.ledger.correlation import StatementTag
from airflow_hoop.wire.session_settings import SessionSettings
from airflow_hoop.wire.sessions import Column

#: read_only_sql_transaction: what PostgreSQL answers a write in a read-only transaction.
_READ_ONLY_SQL_TRANSACTION = "25006"
_TX_CONTROL = re.compile(r"^\s*(COMMIT|ROLLBACK)\s*;?\s*$", re.IGNORECASE)
#: Makes the open transaction fail (so that a later COMMIT is refused).
_ABORT_TX = (
    "DO $$BEGIN RAISE EXCEPTION 'airflow-hoop: the output of a statement of this transaction "
    "could not be masked'; END$$"
)
_ABORTED = (
    "COMMIT refused: an earlier statement of this transaction failed, so the transaction "
    "was rolled back and nothing was committed"
)


class TargetUnavailableError(HoopError):
    """The target database could not be reached or refused the step's dynamic user."""

    link = "target"
    default_fix = "check that the target database runs and is reachable from the gateway"


class PostgresRunner:
    """One open connection of one step to one target, as the step's dynamic user."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        *,
        max_rows: int,
        max_output: int,
        read_only: bool = False,
        tag: StatementTag | None = None,
        step_key: str | None = None,
    ) -> None:
        self._conn = conn
        #: The hook's ``options`` settings on this connection (``session_settings.py``).
        self._session = SessionSettingsState(step_key)
        #: The step's statement comment (None: statements go out as the task sent them).
        self._tag = tag
        #: Every script in a read-only transaction the runner opens itself (``read_only.py``).
        self.read_only = read_only
        self._max_rows = max_rows
        self._max_output = max_output
        # Masking: source (schema, table, column) of result columns, per (table oid, attnum).
        self._sources: SourceCache = {}

    @classmethod
    async def connect(
        cls,
        target: PostgresConnection,
        username: str,
        password: SecretStr,
        *,
        max_rows: int,
        max_output: int,
        connect_timeout: int = 10,
        read_only: bool = False,
        application_name: str = "airflow-hoop gateway",
        tag: StatementTag | None = None,
        step_key: str | None = None,
    ) -> PostgresRunner:
        """Log in as the step's user; ``application_name`` rides in the startup packet."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                host=target.host,
                port=target.port,
                dbname=target.database,
                user=username,
                password=password.get_secret_value(),
                sslmode=target.sslmode,
                connect_timeout=connect_timeout,
                # Read-only: psycopg must never open a transaction itself (its BEGIN would be
                # read-write); the runner sends its own BEGIN TRANSACTION READ ONLY.
                autocommit=read_only,
                application_name=application_name,
            )
        except psycopg.Error as exc:
            # The libpq message names host and user, never the password.
            first = (str(exc).strip().splitlines() or ["no message"])[-1]
            raise TargetUnavailableError(
                f"cannot connect to connection {target.name!r} "
                f"({target.host}:{target.port}/{target.database}) as {username}: {first}"
            ) from None
        return cls(
            conn,
            max_rows=max_rows,
            max_output=max_output,
            read_only=read_only,
            tag=tag,
            step_key=step_key,
        )

    @property
    def broken(self) -> bool:
        return self._conn.broken or self._conn.closed

    @property
    def in_transaction(self) -> bool:
        """A transaction is open on the connection (client-side state, no round trip)."""
        return self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    async def execute(
        self,
        script: str,
        parameters: Any = None,
        *,
        autocommit: bool = False,
        masker: ResultMasker | None = None,
        seq: int | None = None,
        settings: SessionSettings | None = None,
    ) -> RunOutcome:
        """Run ``script`` (bound ``parameters`` when given); never raises for SQL errors.

        ``seq``: the exec's intent record, named in the comment sent before each statement.
        ``settings``: the step's session settings, applied first (a refused value fails the
        exec with PostgreSQL's message, and nothing of the script runs).
        """
        started = time.perf_counter()
        comment = self._comment(seq, parameters)
        sets: list[ResultSet] = []
        # Did this exec open the transaction? Then a failure may roll it back safely.
        fresh = self._conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:
            await self._session.apply(self._conn, settings)
            if _TX_CONTROL.match(script):
                if self._commit_of_aborted(script):
                    await self._conn.rollback()
                    return RunOutcome(
                        status="failed",
                        exit_code=1,
                        error=_ABORTED,
                        status_message="ROLLBACK",
                        duration_ms=_ms(started),
                        output=f"ERROR:  {_ABORTED}\n",
                    )
                await self._transaction_control(script, sets)
            elif self.read_only:
                ended = await self._run_read_only(
                    script, parameters, sets, masker, autocommit, comment
                )
                if ended is not None:
                    return await self._left_transaction(ended, sets, started)
            elif autocommit and fresh and _may_skip_transaction(masker):
                await self._run_autocommit(comment + script, parameters, sets, masker)
            else:
                await self._run(comment + script, parameters, sets, masker)
                if autocommit:
                    await self._conn.commit()
        except psycopg.Error as exc:
            if self.read_only and read_only.GUARD_MARK in str(exc):
                return await self._left_transaction(None, sets, started)
            return await self._failed(
                exc, sets, started, rollback=fresh or autocommit, masker=masker
            )
        except MaskingError as exc:
            return await self._unmaskable(exc, started, rollback=fresh or autocommit)
        last = sets[-1] if sets else ResultSet()
        output, capped = self._cap(render_output(sets))
        unmasked = _unmasked(sets)
        return RunOutcome(
            unmasked_rows=last.unmasked_rows,
            unmasked_output=None if unmasked is None else self._cap(render_output(unmasked))[0],
            status="success",
            exit_code=0,
            columns=last.columns,
            rows=last.rows,
            rowcount=last.rowcount,
            status_message=last.status_message,
            duration_ms=_ms(started),
            truncated=capped or any(s.truncated for s in sets),
            output=output,
        )

    def _comment(self, seq: int | None, parameters: Any) -> str:
        """The correlation comment for this exec ('' without a tag or a seq)."""
        if self._tag is None or seq is None:
            return ""
        return self._tag.comment(seq, parameters=parameters is not None)

    def _commit_of_aborted(self, script: str) -> bool:
        """COMMIT of a failed transaction: Postgres silently rolls back; we say so loudly."""
        aborted = self._conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        return aborted and _is_commit(script)

    async def _transaction_control(self, script: str, sets: list[ResultSet]) -> None:
        # commit()/rollback() keep psycopg's transaction state in step with the server's.
        if _is_commit(script):
            await self._conn.commit()
            sets.append(ResultSet(status_message="COMMIT"))
        else:
            await self._conn.rollback()
            sets.append(ResultSet(status_message="ROLLBACK"))

    async def _run_autocommit(
        self, script: str, parameters: Any, sets: list[ResultSet], masker: ResultMasker | None
    ) -> None:
        """An autocommit exec with no transaction open: one round trip instead of three.

        The connection is switched to autocommit (a client-side flag, no round trip) so the
        server commits the script's implicit transaction itself: no BEGIN before it, no COMMIT
        after it. A multi-statement script is still one atomic implicit transaction, and
        statements that refuse transaction blocks (VACUUM, CREATE INDEX CONCURRENTLY) work as
        with a psycopg connection in autocommit mode.
        """
        await self._conn.set_autocommit(True)
        try:
            await self._run(script, parameters, sets, masker)
        finally:
            # Fails only on a broken connection, which is replaced before its next use anyway.
            with contextlib.suppress(psycopg.Error):
                await self._conn.set_autocommit(False)

    async def _run_read_only(
        self,
        script: str,
        parameters: Any,
        sets: list[ResultSet],
        masker: ResultMasker | None,
        autocommit: bool,
        comment: str = "",
    ) -> int | None:
        """The script in the gateway's read-only transaction, one round trip (``read_only.py``).

        Returns the index of a statement that ended the transaction (the exec then fails),
        else None. Raises psycopg.Error for the first statement PostgreSQL refused.
        """
        # With parameters the script is one statement (the extended protocol refuses more).
        statements = [script] if parameters is not None else read_only.split_statements(script)
        async with self._conn.pipeline():
            cursors = await read_only.queue(
                self._conn, statements, parameters, autocommit=autocommit, comment=comment
            )
        # The last statement may end the transaction too (nothing of the script follows it,
        # but a COMMIT AND CHAIN would leave the step a transaction without the guard's mark).
        ended = read_only.ending_statement(cursors)
        if ended is None and not autocommit and not self.in_transaction:
            ended = len(cursors) - 1
        if ended is not None:
            return ended
        for cur in cursors:
            sets.append(await self._collect(cur, masker))
        return None

    async def _left_transaction(
        self, index: int | None, sets: list[ResultSet], started: float
    ) -> RunOutcome:
        """A statement ended the gateway's read-only transaction: refuse, undo, disconnect.

        Nothing after that statement ran (the guard refused it in the server). The connection
        is closed, so the step's next read gets a fresh one (and a fresh read user).
        """
        which = "a statement" if index is None else f"statement {index + 1}"
        error = (
            f"refused by the database: {which} of the script ended the gateway's read-only "
            "transaction (COMMIT, ROLLBACK, END, ABORT or PREPARE TRANSACTION inside a command "
            "that was not approved); nothing after it ran, and the connection was closed"
        )
        with contextlib.suppress(psycopg.Error):
            await self._conn.rollback()
        with contextlib.suppress(Exception):
            await self._conn.close()
        return self._error_outcome(error, _READ_ONLY_SQL_TRANSACTION, sets, started)

    async def _run(
        self, script: str, parameters: Any, sets: list[ResultSet], masker: ResultMasker | None
    ) -> None:
        async with self._conn.cursor() as cur:
            if parameters is None:
                # No parameters: simple query protocol, so '%' is literal and a script
                # may hold several statements.
                await cur.execute(script)  # type: ignore[arg-type]
            else:
                await cur.execute(script, parameters)  # type: ignore[arg-type]
            while True:
                sets.append(await self._collect(cur, masker))
                if not cur.nextset():
                    break

    async def _collect(
        self, cur: psycopg.AsyncCursor[Any], masker: ResultMasker | None = None
    ) -> ResultSet:
        if cur.description is None:
            return ResultSet(rowcount=cur.rowcount, status_message=cur.statusmessage)
        columns = [
            Column(name=c.name, type_code=c.type_code, type_name=_type_name(c))
            for c in cur.description
        ]
        rows = await cur.fetchmany(self._max_rows + 1)
        truncated = len(rows) > self._max_rows
        rows, unmasked = rows[: self._max_rows], None
        if masker is not None:  # before anything renders, stores or returns the rows
            with_sources = masker.engine.needs_sources
            infos = await column_infos(self._conn, cur, self._sources, with_sources=with_sources)
            unmasked = rows if masker.unmasked_to_task else None
            rows = await mask_result(masker, infos, rows)
        return ResultSet(
            unmasked_rows=unmasked,
            columns=columns,
            rows=rows,
            rowcount=cur.rowcount,
            status_message=cur.statusmessage,
            truncated=truncated,
        )

    async def _failed(
        self,
        exc: psycopg.Error,
        sets: list[ResultSet],
        started: float,
        *,
        rollback: bool,
        masker: ResultMasker | None = None,
    ) -> RunOutcome:
        diag = getattr(exc, "diag", None)
        primary = getattr(diag, "message_primary", None) or (str(exc).splitlines() or ["error"])[0]
        if masker is not None:  # "invalid input syntax for type integer: \"<a value>\""
            try:
                primary = masker.mask_text(primary)
            except MaskingError:
                primary = "(the error message was withheld: it could not be masked)"
        sqlstate = getattr(diag, "sqlstate", None)
        # A failure aborts the transaction. If this exec opened it (or runs in autocommit),
        # rolling back loses nothing and keeps the step's connection usable. Otherwise earlier
        # statements of the step's transaction are in it: leave it aborted, as Postgres does,
        # so that the client's later COMMIT cannot commit half of its work.
        if rollback and not self.broken:
            with contextlib.suppress(psycopg.Error):
                await self._conn.rollback()
        return self._error_outcome(primary, sqlstate, sets, started)

    def _error_outcome(
        self, error: str, sqlstate: str | None, sets: list[ResultSet], started: float
    ) -> RunOutcome:
        """A failed exec as psql shows it: the results before the error, then the error."""
        output, capped = self._cap(f"{render_output(sets)}ERROR:  {error}\n")
        return RunOutcome(
            status="failed",
            exit_code=1,
            error=error,
            sqlstate=sqlstate,
            duration_ms=_ms(started),
            output=output,
            truncated=capped,
        )

    async def _unmaskable(self, exc: MaskingError, started: float, *, rollback: bool) -> RunOutcome:
        """A strict masking policy could not mask the result: fail, withhold it, undo it.

        If this exec opened the transaction it is rolled back; otherwise the transaction is
        made to fail, so the step's later COMMIT is refused as after any failed statement.
        """
        if not self.broken:
            with contextlib.suppress(psycopg.Error):
                if rollback:
                    await self._conn.rollback()
                else:
                    await self._conn.execute(_ABORT_TX)
        return RunOutcome(
            status="failed",
            exit_code=1,
            error=exc.what,
            duration_ms=_ms(started),
            output=f"[gateway] {exc.what}\n",
        )

    def _cap(self, text: str) -> tuple[str, bool]:
        """Cap the text output at ``max_output`` bytes (hoop's ``truncated``)."""
        data = text.encode("utf-8")
        if len(data) <= self._max_output:
            return text, False
        return data[: self._max_output].decode("utf-8", "ignore"), True

    async def cancel(self) -> None:
        """Ask the server to cancel the running statement (safe from another task)."""
        if not self.broken:
            await self._conn.cancel_safe(timeout=5.0)

    async def close(self) -> None:
        await self._conn.close()


def _may_skip_transaction(masker: ResultMasker | None) -> bool:
    """May an autocommit exec run without an explicit transaction around it?

    Not under a strict masking policy: output it cannot mask must be undone (rolled back),
    which needs the transaction that autocommit mode would have committed already.
    """
    return masker is None or masker.engine.policy.mode != "strict"


def _unmasked(sets: list[ResultSet]) -> list[ResultSet] | None:
    """The result sets as they were before masking, if the policy kept them for the task."""
    if not any(rs.unmasked_rows is not None for rs in sets):
        return None
    return [
        rs if rs.unmasked_rows is None else rs.model_copy(update={"rows": rs.unmasked_rows})
        for rs in sets
    ]


def is_transaction_control(script: str) -> bool:
    """Exactly ``COMMIT`` or ``ROLLBACK``: the runner ends its transaction itself (it never
    sends such a script to the server)."""
    return _TX_CONTROL.match(script) is not None


def _is_commit(script: str) -> bool:
    return script.strip().rstrip(";").strip().upper() == "COMMIT"


def _type_name(column: psycopg.Column) -> str | None:
    try:
        return column.type_display
    except Exception:  # an unknown OID: the name is optional
        return None


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
