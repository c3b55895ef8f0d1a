"""Rows from hoop's text output: what ``psql -A -F '\\t'`` prints for a script.

A hoop.dev gateway runs a postgres connection's script through ``psql -v ON_ERROR_STOP=1 -A
-F<tab> -P pager=off`` and answers with the process's stdout and stderr as one text. For each
statement psql prints either a result set (a header line of column names, one line per row,
then a ``(N rows)`` footer) or a command tag (``INSERT 0 3``, ``CREATE TABLE``), and notices
and errors (``NOTICE:  ...``, ``ERROR:  ...`` with ``LINE``/``DETAIL``/``HINT`` lines).

What the text cannot tell, and so what a plain hoop.dev gateway cannot give back:

- types: every value is a string (``1``, ``t``, ``2.50``, ``{1,2}``); the airflow-hoop gateway
  sends typed values under the ``airflow_hoop`` extension instead;
- NULL from the empty string: psql prints both as nothing; they come back as ``None``;
- a value holding a tab or a line break: the row boundaries become ambiguous. The parser
  checks every result set against its ``(N rows)`` footer and raises rather than guess.

Never imports Airflow.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from airflow_hoop.errors import HoopError

_FOOTER = re.compile(r"^\((\d+) rows?\)$")
_PSQL_LOCATION = r"(?:psql:[^\n]*?:\d+: )?"
_MESSAGE = re.compile(
    rf"^{_PSQL_LOCATION}(ERROR|FATAL|PANIC|WARNING|NOTICE|INFO|LOG|DEBUG):  (.*)$"
)
_PSQL_OWN = re.compile(r"^psql: (error|warning): (.*)$")
_CONTINUATION = re.compile(
    r"^(?:LINE \d+: |(?:DETAIL|HINT|CONTEXT|QUERY|LOCATION|STATEMENT|WHERE):  |\s*\^\s*$)"
)
# Command tags are upper-case words, maybe followed by counts: "INSERT 0 3", "ALTER TABLE".
_TAG = re.compile(r"^[A-Z]+(?: [A-Z]+)*(?: \d+)*$")
# Tags psql prints after the rows of a statement with RETURNING (same statement, not a new one).
_RETURNING_TAGS = ("INSERT", "UPDATE", "DELETE", "MERGE")
_ERRORS = ("ERROR", "FATAL", "PANIC")


class HoopTextError(HoopError):
    """hoop's text output could not be read back into rows without guessing."""

    link = "hoop text output"
    default_fix = (
        "use the airflow-hoop gateway (typed rows), or select values without tabs and line "
        "breaks (e.g. replace(col, E'\\n', ' '))"
    )


class PsqlMessage(BaseModel):
    """A notice, warning or error psql printed, with its LINE/DETAIL/HINT lines."""

    severity: str
    message: str
    detail: list[str] = Field(default_factory=list, description="continuation lines, as printed")

    @property
    def text(self) -> str:
        return "\n".join([f"{self.severity}:  {self.message}", *self.detail])


class TextStatement(BaseModel):
    """One statement's outcome as psql printed it; values are strings or None."""

    columns: list[str] | None = Field(None, description="None: the statement returned no rows")
    rows: list[list[str | None]] = Field(default_factory=list)
    rowcount: int = -1
    status_message: str | None = Field(None, description="the command tag, when psql printed one")


class PsqlOutput(BaseModel):
    """Everything read from one session's output, statements in order."""

    statements: list[TextStatement] = Field(default_factory=list)
    messages: list[PsqlMessage] = Field(default_factory=list)

    @property
    def error(self) -> PsqlMessage | None:
        """The first error psql printed (with ON_ERROR_STOP it is the last thing it did)."""
        return next((m for m in self.messages if m.severity in _ERRORS), None)

    @property
    def last(self) -> TextStatement | None:
        return self.statements[-1] if self.statements else None


def parse_psql_output(text: str, script: str | None = None) -> PsqlOutput:
    """Read ``psql -A -F'\\t'`` output back into statements; raise HoopTextError if ambiguous.

    ``script`` (the SQL that was sent) lets the parser tell an ``INSERT ... RETURNING`` (rows
    then a tag, one statement) from a query followed by an INSERT (two statements): without
    ``RETURNING`` in the script a tag is never joined to the rows before it.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    ends = _result_set_ends(lines)
    returning = script is None or "returning" in script.lower()
    out = PsqlOutput()
    i = 0
    while i < len(lines):
        line = lines[i]
        end = ends.get(i)
        if end == i + 2 and lines[i + 1] == "" and (_TAG.match(line) or _message(line)):
            # Either a one-column set whose single value is NULL, or this tag/notice followed
            # by a zero-column result (psql prints those as one empty line): both read right.
            raise HoopTextError(
                f"lines {i + 1}-{i + 3} of the output read both as a result set and as "
                "a command tag followed by a zero-column result, so the rows cannot be read "
                "back exactly",
                "use the airflow-hoop gateway (typed rows), or give the column a lower-case "
                "name and select at least one column",
            )
        if line == "" and i + 1 < len(lines) and (footer := _FOOTER.match(lines[i + 1])):
            # A zero-column result (SELECT FROM t): psql prints one empty line, no row lines.
            count = int(footer.group(1))
            out.statements.append(
                TextStatement(columns=[], rows=[[] for _ in range(count)], rowcount=count)
            )
            i += 2
            continue
        if end is not None:
            out.statements.append(_result_set(lines, i, end))
            i = end + 1
            continue
        message = _message(line)
        if message is not None:
            i += 1
            while i < len(lines) and _CONTINUATION.match(lines[i]):
                message.detail.append(lines[i])
                i += 1
            if message.severity in _ERRORS:
                # psql stops at the first error (ON_ERROR_STOP): what follows belongs to it.
                message.detail.extend(lines[i:])
                i = len(lines)
            out.messages.append(message)
            continue
        if _TAG.match(line):
            previous = out.statements[-1] if out.statements else None
            if returning and _tag_of_returning(previous, line):
                assert previous is not None
                previous.status_message = line
            else:
                out.statements.append(TextStatement(rowcount=_tag_count(line), status_message=line))
            i += 1
            continue
        raise HoopTextError(
            f"line {i + 1} of the output is neither a result set, a command tag nor a psql "
            f"message ({len(line)} characters), so the rows cannot be read back exactly"
        )
    return out


def error_text(text: str) -> str | None:
    """The first error psql printed, with its detail lines; lenient (never raises)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        message = _message(line)
        if message is not None and message.severity in _ERRORS:
            for follow in lines[i + 1 :]:
                if not _CONTINUATION.match(follow):
                    break
                message.detail.append(follow)
            return message.text
    return None


def _result_set_ends(lines: list[str]) -> dict[int, int]:
    """Header line -> the first footer that closes a result set headed there.

    A footer ``(N rows)`` at line ``j`` can only close a set whose header is line ``j - N - 1``
    (exactly N row lines lie between them); a set headed later always has fewer rows before
    the footer, so a command tag or a notice is never taken for a header. One pass: the parse
    stays linear however many statements a script holds.
    """
    ends: dict[int, int] = {}
    for j, line in enumerate(lines):
        if match := _FOOTER.match(line):
            ends.setdefault(j - int(match.group(1)) - 1, j)
    return ends


def _result_set(lines: list[str], header: int, footer: int) -> TextStatement:
    head = lines[header]
    columns = head.split("\t") if head else []
    rows: list[list[str | None]] = []
    for n, line in enumerate(lines[header + 1 : footer], start=header + 2):
        fields = line.split("\t") if columns else ([] if line == "" else [line])
        if len(fields) != len(columns):
            raise HoopTextError(
                f"row on line {n} has {len(fields)} fields, the header names {len(columns)} "
                "columns: a value holds a tab or a line break, so the rows cannot be read "
                "back exactly"
            )
        rows.append([value if value != "" else None for value in fields])
    return TextStatement(columns=columns, rows=rows, rowcount=len(rows))


def _message(line: str) -> PsqlMessage | None:
    if match := _MESSAGE.match(line):
        return PsqlMessage(severity=match.group(1), message=match.group(2))
    if match := _PSQL_OWN.match(line):
        return PsqlMessage(severity=match.group(1).upper(), message=match.group(2))
    return None


def _tag_of_returning(previous: TextStatement | None, tag: str) -> bool:
    if previous is None or previous.columns is None or previous.status_message is not None:
        return False
    return tag.split(" ", 1)[0] in _RETURNING_TAGS and _tag_count(tag) == previous.rowcount


def _tag_count(tag: str) -> int:
    """DB-API rowcount from a command tag: the last number (``INSERT 0 3`` -> 3), else -1."""
    last = tag.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() and " " in tag else -1
