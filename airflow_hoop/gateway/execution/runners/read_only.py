"""A read-only exec: every statement of the script where PostgreSQL itself refuses writes.

Used for every unapproved command on a connection whose approval rule exempts reads
(``required_for: writes``), as the step's READ user (``vault_read_role``). The label
(``is_read_only``) decides only whether an approval is asked for; this module is what makes a
write that the label misread fail, in the database (docs/security.md):

- The gateway opens the transaction itself, ``BEGIN TRANSACTION READ ONLY``, and runs a first
  query of its own (``_MARK``): after a transaction's first snapshot PostgreSQL refuses
  ``SET TRANSACTION READ WRITE`` (and inside a savepoint it refuses it outright).
- Each statement is sent alone over the extended protocol (psycopg's pipeline mode always uses
  it), which refuses several commands in one message: a split the gateway got wrong fails, it
  cannot smuggle a second statement.
- Before each statement runs, a guard query (``_GUARD``) checks in the server that the
  transaction is still the gateway's read-only one. A ``COMMIT``/``ROLLBACK``/``END``/
  ``ABORT``/``PREPARE TRANSACTION`` of the script (or ``COMMIT AND CHAIN``) ends it: the guard
  fails, and PostgreSQL skips everything after it in the pipeline. The guard is a query
  itself, so a chained transaction has its first snapshot before any script statement runs.
- All of it is one pipeline: one round trip for the whole script, transaction included.

Session settings (``default_transaction_read_only``, ``SESSION CHARACTERISTICS``,
``RESET ALL``) only shape transactions the gateway does not open: it opens every one itself.
"""

from __future__ import annotations

import functools
from typing import Any

import psycopg
from pglast import split as pg_split
from pglast.parser import ParseError

BEGIN_READ_ONLY = "BEGIN TRANSACTION READ ONLY"
#: The gateway's first query in its transaction: takes the first snapshot and notes which
#: transaction is the gateway's (its start time, reverted with the transaction: ``true``).
#: Epoch as numeric text: exact, and independent of TimeZone, DateStyle or extra_float_digits,
#: which a script may change.
_MARK = (
    "SELECT pg_catalog.set_config('airflow_hoop.read_only_tx', "
    "EXTRACT(epoch FROM pg_catalog.transaction_timestamp())::pg_catalog.text, true)"
)
#: Marker of the guard's error message (an unknown setting's name: PostgreSQL quotes it).
GUARD_MARK = "airflow-hoop guard"
#: Fails unless the transaction is read-only and still the one ``_MARK`` noted. The failing
#: branch reads a setting that cannot exist (no dot in its name), so PostgreSQL raises; the
#: condition is not constant, so the planner cannot fold the failing branch in advance.
_GUARD = (
    "SELECT pg_catalog.current_setting(CASE WHEN "
    "pg_catalog.current_setting('transaction_read_only') OPERATOR(pg_catalog.=) 'on' AND "
    "pg_catalog.current_setting('airflow_hoop.read_only_tx', true) OPERATOR(pg_catalog.=) "
    "EXTRACT(epoch FROM pg_catalog.transaction_timestamp())::pg_catalog.text "
    "THEN 'transaction_read_only' "
    f"ELSE '{GUARD_MARK}: the read-only transaction was ended' END)"
)
#: The gateway's own statements: they carry no correlation comment (docs/correlation.md); a
#: log reader gives each to the script statement that follows it on the session.
OWN_STATEMENTS = (BEGIN_READ_ONLY, _MARK, _GUARD, "COMMIT")
#: Command tags of statements that end the transaction they run in.
_ENDING_TAGS = ("COMMIT", "ROLLBACK", "PREPARE TRANSACTION")


#: Scripts up to this size are split once and cached by text, as ``sql_label`` caches labels:
#: a step sends the same few statements again and again.
_CACHED_CHARS = 8192


def split_statements(script: str) -> list[str]:
    """The script's statements, by PostgreSQL's own parser (libpg_query).

    A script it cannot parse is sent whole: over the extended protocol the server then refuses
    it (a syntax error, or "cannot insert multiple commands into a prepared statement").
    """
    if len(script) <= _CACHED_CHARS:
        return list(_split_cached(script))
    return list(_split(script))


@functools.lru_cache(maxsize=4096)
def _split_cached(script: str) -> tuple[str, ...]:
    return _split(script)


def _split(script: str) -> tuple[str, ...]:
    try:
        parts = tuple(p for p in pg_split(script) if p.strip())
    except ParseError:
        return (script,)
    return parts or (script,)


async def queue(
    conn: psycopg.AsyncConnection[Any],
    statements: list[str],
    parameters: Any,
    *,
    autocommit: bool,
    comment: str = "",
) -> list[psycopg.AsyncCursor[Any]]:
    """Queue the script in the connection's open pipeline; returns one cursor per statement.

    ``comment`` (the step's correlation comment) goes in front of each script statement, never
    in front of the gateway's own BEGIN, mark, guard or COMMIT.

    Nothing is sent before the pipeline syncs: the caller's ``async with conn.pipeline()``
    exit sends it all and raises the first error.
    """
    opening = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    if opening:
        await conn.execute(BEGIN_READ_ONLY, prepare=False)
        if not (autocommit and len(statements) == 1):
            await conn.execute(_MARK, prepare=False)
        # Else no mark: one statement, then our COMMIT, and no guard to read a mark. Alone in
        # its message it cannot be two; a ``SET TRANSACTION READ WRITE`` would have nothing
        # left to run; anything that runs a query (a function, DO, CALL) takes the snapshot
        # first, after which PostgreSQL refuses READ WRITE (docs/security.md).
    cursors = []
    for i, statement in enumerate(statements):
        # Right after the mark the transaction is the gateway's by construction; before any
        # later statement (and in a transaction an earlier exec opened) the guard checks it.
        if i > 0 or not opening:
            await conn.execute(_GUARD, prepare=False)
        cur = conn.cursor()
        # prepare=False: a script's statement never becomes a cached prepared statement.
        await cur.execute(comment + statement, parameters, prepare=False)  # type: ignore[arg-type]
        cursors.append(cur)
    if autocommit:
        await conn.execute("COMMIT", prepare=False)
    return cursors


def ending_statement(cursors: list[psycopg.AsyncCursor[Any]]) -> int | None:
    """Index of the first statement whose command tag says it ended its transaction."""
    for i, cur in enumerate(cursors):
        tag = (cur.statusmessage or "").upper()
        if tag.startswith(_ENDING_TAGS):
            return i
    return None
