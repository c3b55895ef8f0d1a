"""Command digests: what an approval is bound to, computed the same way on both sides.

A *statement* is one exec (one ``POST /api/sessions``): its script and the digest of its bound
parameters as they travel on the wire. A *command* is the ordered list of statements a step
will run (a SQL task split into statements, or one shell script). The task side computes the
digest when it asks for a review; the gateway recomputes it from the statements it receives
and, at exec time, from what the step actually sends. Any difference is a different command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_hoop.ledger.canonical import canonical, sha256_hex


def parameters_sha256(wire_parameters: Any) -> str | None:
    """Digest of the wire-encoded parameters (``wire.values``); None when there are none."""
    return None if wire_parameters is None else sha256_hex(canonical(wire_parameters))


def statement_sha256(script: str, params_sha256: str | None) -> str:
    """Digest of one statement: its exact script and its parameters' digest."""
    return sha256_hex(
        canonical({"parameters_sha256": params_sha256, "script_sha256": sha256_hex(script)})
    )


def command_sha256(statement_digests: Sequence[str]) -> str:
    """Digest of a command: its statements' digests, in order."""
    return sha256_hex(canonical(list(statement_digests)))


#: hoop's env_vars key prefix of each kind of variable (``wire/env.py``).
_ENV_WIRE_PREFIX = {"env": "envvar:", "file": "filesystem:"}


def shell_context(
    client_args: Sequence[str],
    cwd: str | None,
    env: Sequence[tuple[str, str, str]],
) -> dict[str, Any] | None:
    """What besides its script decides what a shell command does; bound into its approval.

    Used as the shell statement's "parameters": ``statement_sha256(script,
    parameters_sha256(shell_context(...)))``, so an approval of a script cannot be reused with
    other arguments, another working directory or another environment. ``env`` holds
    ``(name, kind, value)`` with kind ``env`` or ``file`` (hoop's ``envvar:``/``filesystem:``);
    values enter as SHA-256 digests only, so a review never shows or stores a secret value.
    ``cwd`` is the path as the request names it. None when there is nothing besides the
    script (then the digest is the script's alone, as before).
    """
    if not client_args and cwd is None and not env:
        return None
    return {
        "client_args": list(client_args),
        "cwd": cwd,
        "env": {f"{_ENV_WIRE_PREFIX[kind]}{name}": sha256_hex(value) for name, kind, value in env},
    }
