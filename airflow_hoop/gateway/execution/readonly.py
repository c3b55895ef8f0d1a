"""Is a SQL script plainly read-only? Conservative on purpose: when in doubt, it is a write.

Approval rules with ``required_for: writes`` exempt only read-only statements, so a wrong
"read-only" answer would let a write skip its approval, while a wrong "write" answer only
asks a human once more. The rules, applied to the script with comments and the contents of
string literals, quoted identifiers and dollar-quoted bodies removed:

- every statement starts with ``SELECT``, ``SHOW``, ``EXPLAIN``, ``VALUES`` or ``TABLE``
  (``WITH`` is not accepted: a CTE may hold ``INSERT``/``UPDATE``/``DELETE``);
- no statement contains ``INTO`` (``SELECT ... INTO`` creates a table), ``FOR`` (locking
  clauses ``FOR UPDATE/SHARE``), ``ANALYZE`` (``EXPLAIN ANALYZE`` runs the statement) or a
  data-changing keyword (``INSERT``, ``UPDATE``, ``DELETE``, ``MERGE``, ``COPY``, ...);
- every function call is to a function known to be side-effect free (aggregates, string,
  math and date functions); any other ``name(`` may write (``nextval``, ``setval``,
  ``pg_terminate_backend``, ``dblink_exec``, ``lo_import``, user-defined functions...).

Transaction control alone (``BEGIN``, ``COMMIT``, ``ROLLBACK``, ``END``, ``START
TRANSACTION``) is neither: it runs nothing new (``is_transaction_control``).
Every shell script counts as a write.
"""

from __future__ import annotations

import re

_READ_STARTS = frozenset({"SELECT", "SHOW", "EXPLAIN", "VALUES", "TABLE"})
_WRITE_WORDS = frozenset(
    {
        "INTO",
        "FOR",
        "ANALYZE",
        "ANALYSE",
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "UPSERT",
        "COPY",
        "CREATE",
        "ALTER",
        "DROP",
        "TRUNCATE",
        "GRANT",
        "REVOKE",
        "CALL",
        "DO",
        "EXECUTE",
        "LOCK",
        "SET",
        "RESET",
        "NOTIFY",
        "LISTEN",
        "VACUUM",
        "REINDEX",
        "CLUSTER",
        "REFRESH",
        "IMPORT",
        "LOAD",
        "PREPARE",
        "DISCARD",
        "COMMENT",
        "SECURITY",
    }
)
#: Functions without side effects that read-only queries commonly call.
SAFE_FUNCTIONS = frozenset(
    {
        # aggregates and window functions
        "COUNT", "SUM", "AVG", "MIN", "MAX", "BOOL_AND", "BOOL_OR", "EVERY", "STRING_AGG",
        "ARRAY_AGG", "JSON_AGG", "JSONB_AGG", "JSON_OBJECT_AGG", "JSONB_OBJECT_AGG", "STDDEV",
        "STDDEV_POP", "STDDEV_SAMP", "VARIANCE", "VAR_POP", "VAR_SAMP", "PERCENTILE_CONT",
        "PERCENTILE_DISC", "MODE", "ROW_NUMBER", "RANK", "DENSE_RANK", "NTILE", "LAG", "LEAD",
        "FIRST_VALUE", "LAST_VALUE", "NTH_VALUE", "CUME_DIST", "PERCENT_RANK", "FILTER", "OVER",
        # conditionals and casts
        "COALESCE", "NULLIF", "GREATEST", "LEAST", "CAST", "EXISTS", "IN", "ANY", "ALL", "SOME",
        # strings
        "LOWER", "UPPER", "LENGTH", "CHAR_LENGTH", "CHARACTER_LENGTH", "OCTET_LENGTH", "TRIM",
        "LTRIM", "RTRIM", "BTRIM", "SUBSTRING", "SUBSTR", "POSITION", "STRPOS", "REPLACE",
        "CONCAT", "CONCAT_WS", "LEFT", "RIGHT", "LPAD", "RPAD", "SPLIT_PART", "INITCAP", "MD5",
        "REGEXP_REPLACE", "REGEXP_MATCH", "REGEXP_MATCHES", "FORMAT", "TO_CHAR", "REVERSE",
        "REPEAT", "TRANSLATE", "STARTS_WITH",
        # numbers
        "ABS", "ROUND", "TRUNC", "CEIL", "CEILING", "FLOOR", "MOD", "POWER", "SQRT", "EXP",
        "LN", "LOG", "SIGN", "TO_NUMBER", "NUMERIC", "DECIMAL", "INT", "INTEGER", "BIGINT",
        "FLOAT", "VARCHAR", "CHAR", "TEXT",
        # dates and times
        "NOW", "CURRENT_DATE", "CURRENT_TIMESTAMP", "DATE_TRUNC", "DATE_PART", "EXTRACT",
        "AGE", "TO_DATE", "TO_TIMESTAMP", "MAKE_DATE", "MAKE_INTERVAL", "DATE", "TIMESTAMP",
        "INTERVAL", "GENERATE_SERIES",
        # arrays and json
        "ARRAY", "ARRAY_LENGTH", "CARDINALITY", "UNNEST", "ROW", "JSONB_BUILD_OBJECT",
        "JSON_BUILD_OBJECT", "TO_JSON", "TO_JSONB", "JSONB_EXTRACT_PATH_TEXT",
        "JSON_EXTRACT_PATH_TEXT", "JSONB_ARRAY_LENGTH",
        # introspection
        "VERSION", "CURRENT_USER", "SESSION_USER", "CURRENT_SCHEMA", "CURRENT_DATABASE",
    }
)  # fmt: skip
#: Keywords that may precede a parenthesis without being a function call.
_STRUCTURAL = frozenset(
    {
        "SELECT", "FROM", "JOIN", "ON", "WHERE", "AND", "OR", "NOT", "AS", "BY", "HAVING",
        "USING", "LATERAL", "CASE", "WHEN", "THEN", "ELSE", "UNION", "INTERSECT", "EXCEPT",
        "DISTINCT", "IS", "BETWEEN", "LIKE", "ILIKE", "SIMILAR", "TO", "LIMIT", "OFFSET",
        "INNER", "LEFT", "RIGHT", "FULL", "OUTER", "CROSS", "NATURAL", "WITHIN", "GROUP",
        "ORDER", "PARTITION", "ROWS", "RANGE", "VALUES", "TABLE", "EXPLAIN", "SHOW",
    }
)  # fmt: skip
_TX_CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "END", "START", "ABORT"})

# Literals and comments, removed before looking at keywords. Dollar quotes: $tag$...$tag$.
_STRIP = re.compile(
    r"""
      --[^\n]*                         # line comment
    | /\*.*?\*/                        # block comment (nesting is treated as a write below)
    | '(?:[^']|'')*'                   # string literal (E'' escapes: \\' handled below)
    | "(?:[^"]|"")*"                   # quoted identifier
    | \$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$   # dollar-quoted body
    """,
    re.VERBOSE | re.DOTALL,
)
_WORD_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_$]*)\s*(\()?")


def _strip(script: str) -> str | None:
    """The script without comments and literals; None when it cannot be tokenised safely."""
    # Backslash escapes (E'...') and nested comments are where a simple tokeniser goes
    # wrong: do not guess, call it a write.
    if "\\" in script or re.search(r"/\*(?:(?!\*/).)*/\*", script, re.DOTALL):
        return None
    out = _STRIP.sub(" ", script)
    if any(ch in out for ch in ("'", '"', "$")) or "/*" in out:
        return None  # an unterminated literal or comment
    return out


def _statements(script: str) -> list[str] | None:
    stripped = _strip(script)
    if stripped is None:
        return None
    return [part for part in (p.strip() for p in stripped.split(";")) if part]


def is_transaction_control(script: str) -> bool:
    """True when the script only begins, commits or rolls back a transaction."""
    statements = _statements(script)
    if not statements:
        return False
    for statement in statements:
        words = statement.upper().split()
        if not words or words[0] not in _TX_CONTROL:
            return False
        if words[0] == "START" and words[1:2] != ["TRANSACTION"]:
            return False
        # COMMIT PREPARED / ROLLBACK TO SAVEPOINT... are not plain control.
        plain_end = words[0] in ("COMMIT", "ROLLBACK", "ABORT", "END")
        if plain_end and len(words) > 1 and words[1] not in ("WORK", "TRANSACTION"):
            return False
    return True


def is_read_only(script: str) -> bool:
    """True only for scripts made of plain read-only statements (see the module doc)."""
    statements = _statements(script)
    if not statements:
        return False
    for statement in statements:
        words = [m.group(1).upper() for m in _WORD_CALL.finditer(statement)]
        if not words or words[0] not in _READ_STARTS:
            return False
        if any(w in _WRITE_WORDS for w in words):
            return False
        for match in _WORD_CALL.finditer(statement):
            name, call = match.group(1).upper(), match.group(2)
            if call and name not in SAFE_FUNCTIONS and name not in _STRUCTURAL:
                return False
    return True
