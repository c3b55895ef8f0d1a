"""Masking policy configuration: what a connection's output must not show, and how to hide it.

A policy is part of the gateway settings (``masking:`` on a connection) and is checked when
the settings load: an invalid or empty-matching regular expression, an unknown detector or two
rules with one name are refused there, with the rule's name in the message.

Example (YAML)::

    masking:
      name: warehouse-pii
      mode: best-effort
      columns:
        - {name: emails, columns: ["email", "*_email"], method: hash}
        - {name: cards, columns: ["customers.card_number"], method: partial}
      detectors: [all]
      custom:
        - {name: employee_id, regex: "EMP-[0-9]{6}", method: redact}
"""

from __future__ import annotations

import fnmatch
import functools
import re
from typing import Annotated, Literal

import re2
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from airflow_hoop.gateway.masking.detectors import BY_NAME
from airflow_hoop.gateway.masking.scanner import compile_pattern
from airflow_hoop.ledger.canonical import canonical, sha256_hex

Method = Literal["redact", "partial", "hash", "null"]
TextMethod = Literal["redact", "partial", "hash"]
_RULE_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$"


class ColumnRule(BaseModel):
    """Mask whole values of the SQL result columns that match one of ``columns``.

    A pattern is an fnmatch glob, case-insensitive: ``email``, ``*_ssn`` (the column's name in
    the result *or* its source column, so an alias does not escape the rule), ``orders.email``
    or ``sales.orders.email`` (table-qualified: only columns Postgres reports as coming from
    that table; a computed column has no table and is left to the detectors).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_RULE_NAME, description="named in the record's counts")
    columns: list[str] = Field(min_length=1)
    method: Method = "redact"
    keep_last: int = Field(4, ge=1, le=16, description="partial: characters left visible")

    @field_validator("columns")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            parts = pattern.split(".")
            if not pattern or len(parts) > 3 or not all(parts):
                raise ValueError(f"column pattern {pattern!r} is not [schema.][table.]column")
        return [p.lower() for p in value]


class DetectorRule(BaseModel):
    """A built-in detector, and how what it finds is replaced."""

    model_config = ConfigDict(extra="forbid")

    name: str
    method: TextMethod = "redact"

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in BY_NAME:
            known = ", ".join(sorted(BY_NAME))
            raise ValueError(f"unknown detector {value!r} (known: all, {known})")
        return value


def _detector_list(value: object) -> object:
    """``[all]`` or names as plain strings are short for ``{name: ...}`` entries."""
    if not isinstance(value, list):
        return value
    out: list[object] = []
    for item in value:
        if item == "all":
            out.extend({"name": name} for name in BY_NAME)
        elif isinstance(item, str):
            out.append({"name": item})
        else:
            out.append(item)
    return out


class CustomDetector(BaseModel):
    """A named regular expression, in RE2 syntax (linear time: no look-around, no back-references)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_RULE_NAME)
    regex: str = Field(min_length=1, max_length=4096)
    method: TextMethod = "redact"

    @model_validator(mode="after")
    def _compiles(self) -> CustomDetector:
        # A model validator, not a field one: the message must name the rule.
        try:
            compiled = compile_pattern(self.regex)
        except re2.error as exc:
            reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
            raise ValueError(
                f"custom detector {self.name!r}: invalid regular expression ({reason}); "
                "write it in RE2 syntax (no look-around, no back-references)"
            ) from None
        # An expression that can match nothing would "match" at every position.
        if any(_empty_match(compiled, probe) for probe in _PROBES):
            raise ValueError(
                f"custom detector {self.name!r}: the regular expression matches the empty text"
            )
        return self


_PROBES = (b"", b" ", b"a", b"a b", b"0", b"\n", b"-")


def _empty_match(compiled: re2._Regexp, probe: bytes) -> bool:
    return any(m.end() == m.start() for m in compiled.finditer(probe))


class MaskingPolicy(BaseModel):
    """What a connection's output must not show. Applied before the response, the session row
    and the ledger see it; the result record names it (``name`` and ``version``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_RULE_NAME)
    mode: Literal["strict", "best-effort"] = Field(
        "best-effort",
        description="strict: a masking error fails the command (its output is withheld); "
        "best-effort: the value in error is replaced whole and the error is counted",
    )
    columns: list[ColumnRule] = Field(default_factory=list)
    detectors: Annotated[list[DetectorRule], BeforeValidator(_detector_list)] = Field(
        default_factory=list
    )
    custom: list[CustomDetector] = Field(default_factory=list)
    allow_unmasked_to_task: bool = Field(
        False,
        description="the task itself gets unmasked results (the record and session still get "
        "masked ones); recorded in every result record",
    )
    hmac_key: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Vault KV secret (under the gateway's masking key path) keying 'hash'",
    )
    max_cell_bytes: int = Field(
        4 * 1024 * 1024,
        gt=0,
        description="a text value larger than this is not scanned: it is a masking error",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> MaskingPolicy:
        seen: set[str] = set()
        names = [r.name for r in self.columns] + [d.name for d in self.detectors]
        names += [c.name for c in self.custom]
        for name in names:
            if name in seen:
                raise ValueError(f"masking policy {self.name!r}: rule name {name!r} is used twice")
            seen.add(name)
        return self

    @functools.cached_property
    def version(self) -> str:
        """SHA-256 of the policy's canonical JSON (once: a policy is not changed after it is
        loaded; a changed policy is a new settings object, hence a new version)."""
        return sha256_hex(canonical(self.model_dump(mode="json")))

    @property
    def uses_hash(self) -> bool:
        methods = [r.method for r in self.columns] + [d.method for d in self.detectors]
        return "hash" in methods + [c.method for c in self.custom]


def column_pattern_parts(pattern: str) -> tuple[re.Pattern[str], ...]:
    """The glob parts of a column pattern as anchored regexes, right to left (column first)."""
    return tuple(re.compile(fnmatch.translate(p)) for p in reversed(pattern.split(".")))
