"""hoop's ``env_vars`` wire format: ``{"envvar:NAME": base64(value)}``.

hoop also knows ``filesystem:NAME`` keys: the value is written to a private file and the
variable holds its path. Both sides of the wire use these two functions.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel

ENV_PREFIX = "envvar:"
FILE_PREFIX = "filesystem:"


class EnvEntry(BaseModel):
    """One decoded request variable: exported as is, or written to a file whose path is exported."""

    name: str
    value: str
    kind: Literal["env", "file"] = "env"


def encode_env_vars(env: Mapping[str, str]) -> dict[str, str]:
    """A plain environment as hoop's ``env_vars``."""
    return {
        f"{ENV_PREFIX}{name}": base64.b64encode(str(value).encode("utf-8")).decode("ascii")
        for name, value in env.items()
    }


def decode_env_vars(env_vars: Mapping[str, str]) -> list[EnvEntry]:
    """hoop's ``env_vars`` back to entries; ``ValueError`` names the first bad key (never a value)."""
    entries = []
    for key, encoded in env_vars.items():
        if key.startswith(ENV_PREFIX):
            kind: Literal["env", "file"] = "env"
            name = key[len(ENV_PREFIX) :]
        elif key.startswith(FILE_PREFIX):
            kind, name = "file", key[len(FILE_PREFIX) :]
        else:
            raise ValueError(f"env_vars key {key[:80]!r} must start with envvar: or filesystem:")
        if not name or "=" in name or "\x00" in name:
            raise ValueError(f"env_vars key {key[:80]!r} is not a valid variable name")
        try:
            raw = base64.b64decode(encoded, validate=True)
            value = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            raise ValueError(f"env_vars {key[:80]!r}: the value is not base64 of UTF-8") from None
        if "\x00" in value:
            raise ValueError(f"env_vars {key[:80]!r}: the value contains a NUL character")
        entries.append(EnvEntry(name=name, value=value, kind=kind))
    return entries
