"""Session settings a step asks for (libpq's ``options``), as a closed, typed set.

``PostgresHook(options="-c statement_timeout=3000ms")`` hands libpq a string of server
command-line switches. Through the gateway no startup packet of the step reaches the target, so
the hook parses that string here, refuses every switch that is not one of the settings below
(naming it and the allowed ones), and sends the rest as this model. The gateway applies each
value with ``pg_catalog.set_config`` and bound parameters under the step's own session:
PostgreSQL's own parser validates it, and no value is ever pasted into SQL text
(``gateway/execution/runners/session_settings.py``).

The set is closed on purpose. ``role``, ``session_authorization``,
``default_transaction_read_only`` and every other setting are refused: a setting the gateway
applied would come from the gateway, outside the read-only transaction it opens itself.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from airflow_hoop.errors import ConfigError

#: The settings a step may ask for; ``search_path`` only where its connection's policy allows.
SessionSettingName = Literal[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "application_name",
    "search_path",
]
SESSION_SETTING_NAMES: tuple[str, ...] = get_args(SessionSettingName)
#: Longest value accepted (a timeout or a search_path is far shorter).
_MAX_VALUE_CHARS = 256
#: The application_name prefix's alphabet: no ':' (it cannot forge the ``hoop:<digest>:``
#: mark that follows it), no quote, space or non-ASCII character.
_PREFIX_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
#: Longest application_name prefix: the step's digest must still fit in PostgreSQL's 63 bytes.
APPLICATION_PREFIX_MAX = 24


class SessionSettings(BaseModel):
    """Settings for the step's database session; unset fields leave the server's value.

    ``application_name`` is a prefix: the gateway keeps the step's own name after it
    (``<prefix> hoop:<digest>:<step key>``, docs/correlation.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    statement_timeout: str | None = Field(None, max_length=_MAX_VALUE_CHARS)
    lock_timeout: str | None = Field(None, max_length=_MAX_VALUE_CHARS)
    idle_in_transaction_session_timeout: str | None = Field(None, max_length=_MAX_VALUE_CHARS)
    application_name: str | None = Field(None, max_length=APPLICATION_PREFIX_MAX)
    search_path: str | None = Field(None, max_length=_MAX_VALUE_CHARS)

    @field_validator(
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "search_path",
        mode="before",
    )
    @classmethod
    def _text(cls, value: object) -> object:
        # Numbers as libpq would send them (milliseconds for a timeout). The value is checked
        # by PostgreSQL itself; here only what text cannot be: NUL and control characters.
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and any(ord(ch) < 0x20 or ch == "\x7f" for ch in value):
            raise ValueError("a session setting's value may not hold control characters")
        return value

    @field_validator("application_name")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None and (not value or set(value) - _PREFIX_CHARS):
            raise ValueError(
                "the application_name prefix may hold only letters, digits, '_', '.' and '-'"
            )
        return value

    def items(self) -> list[tuple[str, str]]:
        """The settings that are set, in a fixed order."""
        return [(n, v) for n in SESSION_SETTING_NAMES if (v := getattr(self, n)) is not None]


def parse_libpq_options(options: str | None) -> SessionSettings | None:
    """libpq's ``options`` string (``-c name=value`` / ``--name=value``) as settings.

    libpq's rules: whitespace separates switches unless escaped with a backslash, ``\\\\`` is a
    backslash, and a name's ``-`` is the same as ``_``. Anything that is not one of the allowed
    settings raises ConfigError naming it and the allowed ones: never silently dropped.
    """
    if options is None or not options.strip():
        return None
    values: dict[str, str] = {}
    words = _split_words(options)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c":
            if i + 1 >= len(words):
                raise _refused(word, "'-c' needs a name=value after it")
            assignment, i = words[i + 1], i + 2
        elif word.startswith("-c") or word.startswith("--"):
            assignment, i = word[2:], i + 1
        else:
            raise _refused(word, "only '-c name=value' and '--name=value' switches are accepted")
        name, sep, value = assignment.partition("=")
        name = name.strip().lower().replace("-", "_")
        if not sep:
            raise _refused(assignment, f"{name!r} has no '=value'")
        if name not in SESSION_SETTING_NAMES:
            raise _refused(name, "this setting cannot be set through the gateway")
        values[name] = value
    try:
        return SessionSettings.model_validate(values)
    except ValueError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in getattr(exc, "errors", lambda: [])()
        )
        raise ConfigError(
            f"the hook's options are invalid ({problems or exc})",
            _allowed_fix(),
        ) from None


def _split_words(options: str) -> list[str]:
    """libpq's split of ``options`` (``conninfo_add_options``): backslash escapes, whitespace."""
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in options:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    if current:
        words.append("".join(current))
    return words


def _allowed_fix() -> str:
    return (
        "pass only -c name=value for "
        + ", ".join(SESSION_SETTING_NAMES)
        + " (search_path only where the connection's policy allows it); run other SET "
        "commands in the SQL itself"
    )


def _refused(option: str, why: str) -> ConfigError:
    # The option's name only, cut: a refused switch could carry anything.
    return ConfigError(
        f"option {option[:80]!r} is refused: {why}; allowed settings: "
        + ", ".join(SESSION_SETTING_NAMES),
        _allowed_fix(),
    )
