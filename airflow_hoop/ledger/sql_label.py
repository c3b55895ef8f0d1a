"""The label of a SQL script: ``read``, ``write`` or ``transaction_control``, from PostgreSQL's parser.

The script is parsed by libpg_query (``pglast``: PostgreSQL's own grammar), so comments, nested
comments, ``E'\\''`` escapes, dollar quotes, quoted and schema-qualified names and ``$`` inside
identifiers are read exactly as the server reads them. Each statement gets a label; the
script's label is its worst statement's (``write`` > ``read`` > ``transaction_control``).

The label decides whether a ``required_for: writes`` rule asks for an approval, and what the
Audit tab and the report call a statement. It is **not** the enforcement: a statement run
without an approval runs where PostgreSQL itself refuses writes. So the label errs to
``write`` (a wrong ``write`` asks a person once more; a wrong ``read`` is refused by the
database). ``read`` is given only to:

- ``SELECT`` / ``VALUES`` / ``TABLE`` without a data-modifying statement anywhere (CTEs
  included), without ``INTO`` (creates a table) and without ``FOR UPDATE/SHARE`` (locks rows);
- ``SHOW``; ``EXPLAIN`` of such a query, without ``ANALYZE`` (which runs it);

and only when every function call, operator and cast in it is known side-effect free:

- a function call is read-only when its name is on ``SAFE_FUNCTIONS`` and it is either
  qualified ``pg_catalog.`` (no one but a superuser creates functions there) or unqualified
  with an argument count that a ``pg_catalog`` function of that name accepts, and uses neither
  named arguments nor ``VARIADIC``. ``"lower"(x)`` is the same name as ``lower(x)`` (the
  parser unquotes it); ``public.lower(x)`` and ``lower(x, 1)`` (no ``pg_catalog.lower`` takes
  two arguments: a user function does) are writes;
- an operator is read-only when it is unqualified and one of PostgreSQL's usual symbols;
- a cast is read-only when its type is a built-in type (a domain's CHECK may call a function).

What the parser cannot see (the catalog decides it): a view or a row-security policy that
calls a writing function, and an unqualified allow-listed name, operator or cast that a
same-named object of a better-matching argument type in a schema on the ``search_path``
shadows. Those are labelled ``read`` and fail in the database's read-only transaction.

``transaction_control``: ``BEGIN``/``START TRANSACTION`` (unless ``READ WRITE``), ``COMMIT``,
``ROLLBACK``, ``SAVEPOINT``, ``RELEASE``, ``ROLLBACK TO``: they run nothing new. Everything else
(``SET``, ``COPY``, ``DO``, ``CALL``, ``LOCK``, ``PREPARE``/``EXECUTE``, ``DECLARE``,
``LISTEN``/``NOTIFY``, DDL, two-phase commit), an empty script and an unparsable one: ``write``.

Pure (no database, no network): the gateway records the label in each SQL intent record, and
the reviewer's report uses the recorded label, calling this only for records written before
labels were recorded.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, NamedTuple

from pglast import parser

from airflow_hoop.ledger.records import StatementLabel

#: How much of a statement a reason quotes.
QUOTE_CHARS = 200
#: Scripts up to this size are cached by text (steps send the same few statements again and
#: again); a bigger script is labelled each time, so the cache holds at most 4096 scripts of
#: 8192 characters (32 MB of ASCII).
_CACHED_CHARS = 8192

_RANK: dict[StatementLabel, int] = {"transaction_control": 0, "read": 1, "write": 2}

#: Built-in functions without side effects -> the argument counts ``pg_catalog`` accepts for
#: them unqualified (None: variadic, any count). Anything else may write: ``nextval``,
#: ``setval``, ``pg_terminate_backend``, ``lo_import``, ``dblink_exec``, ``set_config``, ...
SAFE_FUNCTIONS: dict[str, frozenset[int] | None] = {
    # aggregates and window functions
    **dict.fromkeys(
        ["sum", "avg", "min", "max", "bool_and", "bool_or", "every", "array_agg", "json_agg",
         "jsonb_agg", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp",
         "ntile", "first_value", "last_value"],
        frozenset({1}),
    ),
    "count": frozenset({0, 1}),
    "string_agg": frozenset({2}),
    "json_object_agg": frozenset({2}),
    "jsonb_object_agg": frozenset({2}),
    # ordered-set aggregates count their WITHIN GROUP (ORDER BY ...) columns as arguments
    "mode": frozenset({1}),
    "percentile_cont": frozenset({2}),
    "percentile_disc": frozenset({2}),
    **dict.fromkeys(
        ["row_number", "rank", "dense_rank", "cume_dist", "percent_rank"], frozenset({0})
    ),
    "lag": frozenset({1, 2, 3}),
    "lead": frozenset({1, 2, 3}),
    "nth_value": frozenset({2}),
    # strings
    **dict.fromkeys(
        ["lower", "upper", "char_length", "character_length", "octet_length", "initcap", "md5",
         "reverse"],
        frozenset({1}),
    ),
    "length": frozenset({1, 2}),
    **dict.fromkeys(["btrim", "ltrim", "rtrim"], frozenset({1, 2})),
    "substr": frozenset({2, 3}),
    "substring": frozenset({2, 3}),
    "strpos": frozenset({2}),
    "position": frozenset({2}),
    "replace": frozenset({3}),
    "left": frozenset({2}),
    "right": frozenset({2}),
    "lpad": frozenset({2, 3}),
    "rpad": frozenset({2, 3}),
    "split_part": frozenset({3}),
    "regexp_replace": frozenset({3, 4, 5, 6}),
    "regexp_match": frozenset({2, 3}),
    "regexp_matches": frozenset({2, 3}),
    "to_char": frozenset({2}),
    "repeat": frozenset({2}),
    "translate": frozenset({3}),
    "starts_with": frozenset({2}),
    "concat": None,
    "concat_ws": None,
    "format": None,
    # numbers
    **dict.fromkeys(["abs", "ceil", "ceiling", "floor", "sqrt", "exp", "ln", "sign"], frozenset({1})),
    "round": frozenset({1, 2}),
    "trunc": frozenset({1, 2}),
    "mod": frozenset({2}),
    "power": frozenset({2}),
    "log": frozenset({1, 2}),
    "to_number": frozenset({2}),
    "random": frozenset({0}),  # random(min, max) is PostgreSQL 17's: a user one on 15
    # dates and times
    **dict.fromkeys(
        ["now", "clock_timestamp", "statement_timestamp", "transaction_timestamp"], frozenset({0})
    ),
    "date_trunc": frozenset({2, 3}),
    "date_part": frozenset({2}),
    "extract": frozenset({2}),
    "age": frozenset({1, 2}),
    "to_date": frozenset({2}),
    "to_timestamp": frozenset({1, 2}),
    "make_date": frozenset({3}),
    "make_interval": frozenset(range(8)),
    "timezone": frozenset({2}),
    "generate_series": frozenset({2, 3}),  # (start, stop, step, timezone) is 16+
    # arrays and json
    "array_length": frozenset({2}),
    "cardinality": frozenset({1}),
    "unnest": None,
    "array_to_string": frozenset({2, 3}),
    "string_to_array": frozenset({2, 3}),
    **dict.fromkeys(
        ["to_json", "to_jsonb", "json_array_length", "jsonb_array_length", "json_array_elements",
         "jsonb_array_elements", "json_typeof", "jsonb_typeof"],
        frozenset({1}),
    ),
    **dict.fromkeys(
        ["json_build_object", "jsonb_build_object", "json_build_array", "jsonb_build_array",
         "json_extract_path_text", "jsonb_extract_path_text"],
        None,
    ),
    # introspection
    **dict.fromkeys(["version", "current_database", "current_schema", "pg_backend_pid"],
                    frozenset({0})),
}  # fmt: skip

#: Functions the grammar itself writes as ``pg_catalog.<name>`` for SQL syntax
#: (``EXTRACT(... FROM ...)``, ``TRIM``, ``OVERLAY``, ``AT TIME ZONE``, ``SIMILAR TO``...).
_SQL_SYNTAX_FUNCTIONS = frozenset(
    {"overlay", "similar_to_escape", "collation_for", "normalize", "is_normalized", "system_user"}
)

#: Operators of the usual built-in types (unqualified). ``OPERATOR(schema.op)`` is a write.
SAFE_OPERATORS = frozenset(
    {
        "=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "||", "~~", "!~~",
        "~~*", "!~~*", "~", "!~", "~*", "!~*", "->", "->>", "#>", "#>>", "@>", "<@", "?", "?|",
        "?&", "&&", "|/", "||/", "@", "&", "|", "#", "<<", ">>", "@@",
    }
)  # fmt: skip

#: Built-in types a cast may name (the grammar writes ``pg_catalog.int4`` for ``integer``...).
SAFE_TYPES = frozenset(
    {
        "bool", "boolean", "int2", "int4", "int8", "smallint", "integer", "int", "bigint",
        "numeric", "decimal", "real", "float4", "float8", "float", "text", "varchar", "char",
        "bpchar", "name", "date", "time", "timetz", "timestamp", "timestamptz", "interval",
        "json", "jsonb", "uuid", "bytea", "inet", "cidr", "macaddr", "money", "oid",
        "regclass", "regtype", "xml", "bit", "varbit", "tsvector", "tsquery",
    }
)  # fmt: skip

_READ_STATEMENTS = frozenset({"SelectStmt", "VariableShowStmt", "ExplainStmt"})
#: Transaction control that runs nothing new (two-phase commit is not among them).
_TX_KINDS = frozenset(
    {
        "TRANS_STMT_BEGIN",
        "TRANS_STMT_START",
        "TRANS_STMT_COMMIT",
        "TRANS_STMT_ROLLBACK",
        "TRANS_STMT_SAVEPOINT",
        "TRANS_STMT_RELEASE",
        "TRANS_STMT_ROLLBACK_TO",
    }
)
#: What a reason calls a statement kind (the rest: the parser's node name).
_KIND_NAMES = {
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
    "CopyStmt": "COPY",
    "DoStmt": "DO",
    "CallStmt": "CALL",
    "VariableSetStmt": "SET/RESET",
    "LockStmt": "LOCK",
    "PrepareStmt": "PREPARE",
    "ExecuteStmt": "EXECUTE",
    "DeclareCursorStmt": "DECLARE CURSOR",
    "ListenStmt": "LISTEN",
    "NotifyStmt": "NOTIFY",
    "TransactionStmt": "two-phase transaction control",
}


class StatementLabelled(NamedTuple):
    """One statement's label, and why it is a write (None for the others)."""

    label: StatementLabel
    statement: str
    why: str | None = None


class ScriptLabel(NamedTuple):
    """A script's label: its worst statement's, with that statement and why it is a write."""

    label: StatementLabel
    #: The first statement with the script's label (at most QUOTE_CHARS characters); None when
    #: the script could not be parsed or holds no statement.
    statement: str | None = None
    #: Why the script is a write; None for the other labels.
    why: str | None = None

    def explain(self) -> str:
        """One sentence for a refusal: which statement was labelled a write, and why."""
        if self.label != "write":
            return f"the script is labelled {self.label}"
        if self.statement is None:
            return str(self.why)
        return f"statement {self.statement!r} was labelled a write: {self.why}"


def label_sql(script: str, parameterized: bool = False) -> ScriptLabel:
    """The label of a SQL script (see the module doc); never raises.

    ``parameterized``: the script is sent with parameters, so its ``%s`` / ``%(name)s``
    placeholders (and ``%%``) are psycopg's, and become ``$n`` before PostgreSQL parses it.
    """
    if len(script) <= _CACHED_CHARS:
        return _label_cached(script, parameterized)
    return _label(script, parameterized)


@functools.lru_cache(maxsize=4096)
def _label_cached(script: str, parameterized: bool) -> ScriptLabel:
    # Tens of µs to parse and walk a typical statement, ~0.1 µs from the cache.
    return _label(script, parameterized)


#: psycopg's placeholders: ``%%``, ``%s``/``%b``/``%t``, ``%(name)s`` (psycopg/_queries.py).
_PLACEHOLDER = re.compile(r"%(?:\(([^)]+)\)(.)|(.))", re.DOTALL)


def _server_text(script: str) -> str | None:
    """The query PostgreSQL receives for a parameterized script, or None if psycopg refuses it."""
    names: dict[str | None, int] = {}
    refused = False

    def one(match: re.Match[str]) -> str:
        nonlocal refused
        name, fmt = match.group(1), match.group(2) or match.group(3)
        if name is None and fmt == "%":
            return "%"
        if fmt not in ("s", "b", "t"):
            refused = True
            return ""
        key = name if name is not None else f"#{len(names)}"
        return f"${names.setdefault(key, len(names) + 1)}"

    text = _PLACEHOLDER.sub(one, script)
    return None if refused else text


def _label(script: str, parameterized: bool = False) -> ScriptLabel:
    if parameterized:
        server_text = _server_text(script)
        if server_text is None:
            return ScriptLabel(
                "write", why="a placeholder is neither %s nor %(name)s; it counts as a write"
            )
        script = server_text
    try:
        tree = json.loads(parser.parse_sql_json(script))
    except parser.ParseError as exc:
        message, index = (*exc.args, None, None)[:2]
        where = f" at position {index + 1}" if isinstance(index, int) else ""
        return ScriptLabel(
            "write",
            why=f"the statement could not be parsed: {message}{where}; it counts as a write",
        )
    except Exception as exc:  # deep nesting, bad Unicode...: fail closed
        return ScriptLabel(
            "write",
            why=f"the statement could not be analysed ({type(exc).__name__}); it counts as a write",
        )
    raw = script.encode("utf-8")
    worst: StatementLabelled | None = None
    for item in tree.get("stmts", []):
        start = item.get("stmt_location", 0)
        length = item.get("stmt_len", 0) or len(raw) - start
        text = raw[start : start + length].decode("utf-8", "replace").strip()
        labelled = label_statement(item.get("stmt", {}), text)
        if worst is None or _RANK[labelled.label] > _RANK[worst.label]:
            worst = labelled
    if worst is None:
        return ScriptLabel("write", why="the script holds no statement; it counts as a write")
    return ScriptLabel(worst.label, _quote(worst.statement), worst.why)


def label_statement(stmt: dict[str, Any], text: str = "") -> StatementLabelled:
    """The label of one parsed statement (a node of ``parse_sql_json``'s ``stmts``)."""
    (kind, body), *_ = stmt.items() if stmt else (("", {}),)
    if kind == "TransactionStmt":
        if body.get("kind") not in _TX_KINDS:
            return StatementLabelled(
                "write", text, "two-phase commit is not plain transaction control"
            )
        if _asks_read_write(body.get("options", [])):
            return StatementLabelled("write", text, "it opens a READ WRITE transaction")
        return StatementLabelled("transaction_control", text)
    if kind not in _READ_STATEMENTS:
        name = _KIND_NAMES.get(kind, kind.removesuffix("Stmt") or "an unknown statement")
        return StatementLabelled("write", text, f"{name} is not a plain read")
    if kind == "ExplainStmt":
        if any(_node(o, "DefElem").get("defname") == "analyze" for o in body.get("options", [])):
            return StatementLabelled("write", text, "EXPLAIN ANALYZE runs the statement")
        inner = label_statement(body.get("query", {}), text)
        return inner if inner.label == "write" else StatementLabelled("read", text)
    why = _why_not_read(stmt)
    return StatementLabelled("read", text) if why is None else StatementLabelled("write", text, why)


def _why_not_read(root: dict[str, Any]) -> str | None:
    """Why a SELECT-like tree may write, or None; walks every node (no recursion limit)."""
    stack: list[Any] = [root]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
            continue
        if not isinstance(value, dict):
            continue
        for key, child in value.items():
            why = _why_node(key, child)
            if why is not None:
                return why
            if isinstance(child, (dict, list)):
                stack.append(child)
    return None


def _why_node(key: str, body: Any) -> str | None:
    if key == "intoClause" and body:
        return "SELECT ... INTO creates a table"
    if key == "lockingClause" and body:
        return "FOR UPDATE/SHARE locks rows"
    if not isinstance(body, dict):
        return None
    if key in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
        return f"it holds a data-modifying {_KIND_NAMES[key]} (a CTE or subquery)"
    if key == "FuncCall":
        return _why_call(body)
    if key == "A_Expr":
        name = _names(body.get("name", []))
        if len(name) > 1:
            return f"uses operator OPERATOR({'.'.join(name)}), which may write"
        if body.get("kind") in ("AEXPR_OP", "AEXPR_OP_ANY", "AEXPR_OP_ALL") and (
            not name or name[0] not in SAFE_OPERATORS
        ):
            return f"uses operator {''.join(name)}, which is not a built-in one and may write"
    if key == "TypeCast":
        names = _names(body.get("typeName", {}).get("names", []))
        schema, type_name = (names[-2] if len(names) > 1 else None), (names[-1] if names else "")
        if len(names) > 2 or schema not in (None, "pg_catalog") or type_name not in SAFE_TYPES:
            return f"casts to type {'.'.join(names)}, whose cast or checks may call a function"
    return None


def _why_call(call: dict[str, Any]) -> str | None:
    names = _names(call.get("funcname", []))
    shown = f"{'.'.join(names)}()"
    if not names or len(names) > 2:
        return f"calls function {shown}, which may write"
    schema, name = (names[0] if len(names) == 2 else None), names[-1]
    if schema == "pg_catalog":
        if name in SAFE_FUNCTIONS or name in _SQL_SYNTAX_FUNCTIONS:
            return None
        return f"calls function {shown}, which may write"
    if schema is not None or name not in SAFE_FUNCTIONS:
        return f"calls function {shown}, which may write"
    args = call.get("args", [])
    if call.get("func_variadic") or any("NamedArgExpr" in a for a in args):
        return f"calls {shown} with VARIADIC or named arguments, which a user function may take"
    arities = SAFE_FUNCTIONS[name]
    count = len(args) + (len(call.get("agg_order", [])) if call.get("agg_within_group") else 0)
    if arities is not None and count not in arities:
        return (
            f"calls {shown} with {count} argument(s): no built-in {name}() takes that many, "
            "so a user function would run, which may write"
        )
    return None


def _asks_read_write(options: list[Any]) -> bool:
    for option in options:
        elem = _node(option, "DefElem")
        if elem.get("defname") == "transaction_read_only":
            value = _node(elem.get("arg", {}), "A_Const").get("ival", {}).get("ival", 0)
            if not value:
                return True
    return False


def _names(items: list[Any]) -> list[str]:
    return [str(_node(i, "String").get("sval", "")) for i in items]


def _node(value: Any, kind: str) -> dict[str, Any]:
    inner = value.get(kind) if isinstance(value, dict) else None
    return inner if isinstance(inner, dict) else {}


def _quote(text: str) -> str:
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1] + "…"
