"""Masking of one Postgres result set, with the source of each column from the catalog.

Postgres reports, for each result column that is a plain reference to a table column, the
table's oid and the column's number (``PQftable``/``PQftablecol``). One catalog query turns
them into ``schema.table.column``, so a rule on ``customers.email`` also masks
``SELECT email AS contact FROM customers``. Computed columns (``lower(email)``) have no source:
only the detectors see them. The lookup runs in a savepoint of the step's own transaction
(read-only, ``pg_catalog`` qualified, so a table named ``pg_attribute`` cannot spoof it) and
is cached for the life of the step's connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from airflow_hoop.gateway.masking.engine import ColumnInfo, ResultMasker

Source = tuple[str, str, str]  # schema, table, column
SourceCache = dict[tuple[int, int], Source | None]

#: Results larger than this are masked in a worker thread, so the event loop keeps serving.
THREAD_ROWS = 2_000

_LOOKUP = """
SELECT a.attrelid::int8, a.attnum::int4, n.nspname, c.relname, a.attname
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE (a.attrelid, a.attnum) IN (
       SELECT t::oid, k::int2 FROM unnest(%s::int8[], %s::int4[]) AS u(t, k))
"""


async def column_infos(
    conn: psycopg.AsyncConnection[Any],
    cur: psycopg.AsyncCursor[Any],
    cache: SourceCache,
    *,
    with_sources: bool,
) -> list[ColumnInfo]:
    """The result's columns, with their source table and column when the policy needs them."""
    description = cur.description or []
    result = cur.pgresult
    if not with_sources or result is None:
        return [ColumnInfo(c.name) for c in description]
    keys = [(result.ftable(i), result.ftablecol(i)) for i in range(len(description))]
    missing = sorted({k for k in keys if k[0] and k not in cache})
    if missing:
        try:
            async with conn.transaction():  # a savepoint: a failure leaves the step's tx intact
                found = await conn.execute(
                    _LOOKUP, ([t for t, _ in missing], [c for _, c in missing])
                )
                rows = await found.fetchall()
        except psycopg.Error:
            rows = []  # no sources: name rules still apply, table rules cannot
        for oid, num, schema, table, column in rows:
            cache[(oid, num)] = (schema, table, column)
        for key in missing:
            cache.setdefault(key, None)
    infos = []
    for col, key in zip(description, keys, strict=True):
        source = cache.get(key) if key[0] else None
        if source is None:
            infos.append(ColumnInfo(col.name))
        else:
            infos.append(ColumnInfo(col.name, table=source[1], schema=source[0], source=source[2]))
    return infos


async def mask_result(
    masker: ResultMasker, columns: list[ColumnInfo], rows: list[tuple[Any, ...]]
) -> list[Any]:
    """``masker.mask_rows``, off the event loop for large results."""
    if len(rows) < THREAD_ROWS:
        return masker.mask_rows(columns, rows)
    return await asyncio.to_thread(masker.mask_rows, columns, rows)
