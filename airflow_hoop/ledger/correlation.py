"""What a governed statement carries into the database, so a DBA's log line meets its record.

Two marks, both derived from the step alone (docs/correlation.md):

- the session's ``application_name``: ``hoop:<digest>:<key>``, where ``<digest>`` is the first
  16 hex digits of SHA-256 of the step key (stable: the same step always gets the same name)
  and ``<key>`` the step key percent-encoded, cut so the whole stays within PostgreSQL's 63
  bytes (it truncates longer names silently; the digest comes first so it is never cut);
- a comment in front of every script statement the gateway sends, in sqlcommenter's
  ``key='value'`` form::

      /*dag_id='d',hoop_seq='42',map_index='-1',run_id='r',task_id='t',try_number='1'*/

  ``hoop_seq`` is the seq of the exec's intent record in the ledger.

The escaping is by construction, not a blacklist: every value is percent-encoded
(``urllib.parse.quote`` with nothing kept but ``A-Z a-z 0-9 _ . - ~``), so no ``*``, ``/``,
quote, newline or non-ASCII character of a DAG, task or run id can reach the comment; the whole
comment is checked against that alphabet once more before use. Pure: a reviewer joins pgaudit
lines to a bundle's records with this module and nothing else.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from airflow_hoop.errors import HoopError
from airflow_hoop.ledger.records import StepRef

#: PostgreSQL keeps NAMEDATALEN - 1 bytes of an application_name.
APPLICATION_NAME_MAX = 63
APPLICATION_NAME_PREFIX = "hoop:"
_DIGEST_HEX = 16
#: The comment's keys, in sqlcommenter's (sorted) order.
_KEYS = ("dag_id", "hoop_seq", "map_index", "run_id", "task_id", "try_number")
#: Everything a comment may hold: percent-encoded values cannot leave this alphabet.
_SAFE_COMMENT = re.compile(r"/\*(?:[a-z_]+='[A-Za-z0-9_.~%-]*',?)+\*/ ")
_PAIR = re.compile(r"([a-z_]+)='([A-Za-z0-9_.~%-]*)'")
#: A leading comment of ours, found anywhere in a log line (pgaudit quotes the statement).
_FIND = re.compile(r"/\*(dag_id='[A-Za-z0-9_.~%-]*'(?:,[a-z_]+='[A-Za-z0-9_.~%-]*')+)\*/")


class CorrelationError(HoopError):
    """A correlation comment would not be safe (should be impossible: encoding is total)."""

    link = "correlation"
    default_fix = "report this as a bug: the statement was not sent"


#: Lone surrogates (JSON may carry them, e.g. in a JWT claim) are encoded, not refused: the
#: encoding must be total, and decoding gives them back.
_ERRORS = "surrogatepass"


def _encode(value: str) -> str:
    # safe="": '/' is encoded too; quote always keeps only A-Za-z0-9_.-~ unescaped.
    return quote(value, safe="", errors=_ERRORS)


def step_digest(step_key: str) -> str:
    """The first 16 hex digits of SHA-256 of the step key (in the application_name)."""
    return hashlib.sha256(step_key.encode("utf-8", _ERRORS)).hexdigest()[:_DIGEST_HEX]


def application_name(step_key: str, prefix: str | None = None) -> str:
    """``hoop:<digest>:<percent-encoded key, cut>``, at most 63 ASCII bytes.

    ``prefix`` (the step's own ``application_name`` option, letters, digits, ``_.-`` only and
    at most 24 characters: ``wire/session_settings.py``) goes first, then a space; the digest
    still fits whole, and only the readable key is cut shorter.
    """
    lead = f"{prefix} " if prefix else ""
    head = f"{lead}{APPLICATION_NAME_PREFIX}{step_digest(step_key)}:"
    if len(head) > APPLICATION_NAME_MAX:
        raise CorrelationError("an application_name prefix leaves no room for the step's digest")
    room = APPLICATION_NAME_MAX - len(head)
    tail = quote(step_key, safe="/", errors=_ERRORS)[:room]
    # Never end on half an escape ("%2" or "%"): it would decode to something else.
    cut = tail.rfind("%", max(0, len(tail) - 2))
    if cut != -1:
        tail = tail[:cut]
    return head + tail


@dataclass(frozen=True)
class StatementTag:
    """One step's comment, built once per step connection; ``comment(seq)`` per statement."""

    #: ``/*dag_id='..',hoop_seq='`` and ``',map_index=...*/ ``: the seq goes between them.
    before_seq: str
    after_seq: str

    @classmethod
    def for_step(cls, step: StepRef) -> StatementTag:
        fields = {
            "dag_id": step.dag_id,
            "map_index": str(step.map_index),
            "run_id": step.run_id,
            "task_id": step.task_id,
            "try_number": str(step.try_number),
        }
        encoded = {k: _encode(v) for k, v in fields.items()}
        before = f"/*dag_id='{encoded['dag_id']}',hoop_seq='"
        after = ",".join(f"{k}='{encoded[k]}'" for k in _KEYS[2:])
        tag = cls(before_seq=before, after_seq=f"',{after}*/ ")
        tag._check(tag.comment(0))
        return tag

    def comment(self, seq: int, *, parameters: bool = False) -> str:
        """The comment for the statement of intent record ``seq``, with its trailing space.

        ``parameters``: the statement is sent with bound parameters, so psycopg reads ``%`` as
        a placeholder: each is doubled (psycopg sends it as one ``%``).
        """
        text = f"{self.before_seq}{int(seq)}{self.after_seq}"
        return text.replace("%", "%%") if parameters else text

    @staticmethod
    def _check(text: str) -> None:
        # Belt and braces over the encoding: the exact shape, nothing else.
        if _SAFE_COMMENT.fullmatch(text) is None or text.count("*/") != 1:
            raise CorrelationError("a step's correlation comment is not in its safe alphabet")


@dataclass(frozen=True)
class Correlation:
    """What one comment says: the step fields (decoded) and the intent record's seq."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int
    seq: int

    @property
    def step_key(self) -> str:
        return StepRef.key_of(self.__dict__)


def find_comment(text: str) -> Correlation | None:
    """Our comment in ``text`` (a statement, or a whole log line quoting one), decoded."""
    match = _FIND.search(text)
    if match is None:
        return None
    pairs: dict[str, Any] = {
        k: unquote(v, errors=_ERRORS) for k, v in _PAIR.findall(match.group(1))
    }
    if set(pairs) != set(_KEYS):
        return None
    try:
        return Correlation(
            dag_id=pairs["dag_id"],
            task_id=pairs["task_id"],
            run_id=pairs["run_id"],
            try_number=int(pairs["try_number"]),
            map_index=int(pairs["map_index"]),
            seq=int(pairs["hoop_seq"]),
        )
    except ValueError:
        return None
