"""Check an exec request for a shell (``custom``) connection before anything is recorded or run.

Malformed input is a ``BadRequestError`` (400). A ``cwd`` outside the connection's
``cwd_roots`` is a policy matter (``PolicyRefusedError``: the API records it, then 403).
"""

from __future__ import annotations

import codecs
import os
from typing import Any

from airflow_hoop.errors import BadRequestError, PolicyRefusedError
from airflow_hoop.gateway.execution.runners.shell import ShellInvocation
from airflow_hoop.gateway.settings import ShellConnection
from airflow_hoop.ledger.commands import shell_context
from airflow_hoop.wire.env import decode_env_vars
from airflow_hoop.wire.sessions import ExecRequest

_MAX_CLIENT_ARGS = 256


def shell_invocation(req: ExecRequest, connection: ShellConnection) -> ShellInvocation:
    """The validated invocation; raises BadRequestError/PolicyRefusedError naming the problem."""
    ext = req.airflow_hoop
    if ext is not None and (ext.parameters is not None or ext.autocommit):
        raise BadRequestError(
            f"connection {connection.name} runs shell commands: parameters and autocommit "
            "are for SQL connections",
            "pass values to the command in env_vars",
        )
    try:
        env = decode_env_vars(req.env_vars)
    except ValueError as exc:
        raise BadRequestError(str(exc), 'send env_vars as {"envvar:NAME": base64(value)}') from None
    if len(req.client_args) > _MAX_CLIENT_ARGS:
        raise BadRequestError(
            f"{len(req.client_args)} client_args, more than {_MAX_CLIENT_ARGS}",
            "pass fewer arguments",
        )
    if any("\x00" in arg for arg in req.client_args):
        raise BadRequestError("a client_args entry contains a NUL character", "remove the NUL")
    return ShellInvocation(
        script=req.script,
        client_args=req.client_args,
        env=env,
        cwd=resolve_cwd(connection, ext.cwd if ext else None),
        output_encoding=_encoding(ext.output_encoding if ext else None),
    )


def approval_parameters(req: ExecRequest, inv: ShellInvocation) -> dict[str, Any] | None:
    """The shell exec's "parameters" for approvals: its arguments, cwd and environment.

    An approval binds the script *and* these (``ledger.commands.shell_context``): the same
    script with another environment is another command. ``cwd`` as the request names it.
    """
    cwd = req.airflow_hoop.cwd if req.airflow_hoop else None
    return shell_context(inv.client_args, cwd, [(e.name, e.kind, e.value) for e in inv.env])


def resolve_cwd(connection: ShellConnection, cwd: str | None) -> str | None:
    """The real path of a requested working directory on the gateway host, or None.

    ``cwd`` means a directory *on the gateway host* (the worker's directories are not there).
    Like BashOperator, it must exist and be a directory; and it must lie in one of the
    connection's ``cwd_roots`` (none by default: commands run in a fresh directory).
    """
    if cwd is None:
        return None
    if "\x00" in cwd or not os.path.isabs(cwd):
        raise BadRequestError(
            f"cwd {cwd[:200]!r} is not an absolute path", "give cwd as an absolute path"
        )
    real = os.path.realpath(cwd)
    roots = [os.path.realpath(r) for r in connection.cwd_roots]
    if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots):
        raise PolicyRefusedError(
            f"cwd {cwd[:200]} is outside the directories connection {connection.name} allows "
            f"({', '.join(connection.cwd_roots) or 'none'})",
            "omit cwd (the command runs in a fresh directory) or add a root to the "
            "connection's cwd_roots",
        )
    if not os.path.exists(real):
        raise BadRequestError(
            f"Can not find the cwd: {cwd[:200]} (on the gateway host)",
            "create the directory on the gateway host or correct cwd",
        )
    if not os.path.isdir(real):
        raise BadRequestError(
            f"The cwd {cwd[:200]} must be a directory (on the gateway host)", "correct cwd"
        )
    return real


def _encoding(name: str | None) -> str:
    if name is None:
        return "utf-8"
    try:
        info = codecs.lookup(name)
    except (LookupError, TypeError, ValueError):
        info = None
    if info is None or not getattr(info, "_is_text_encoding", True):
        raise BadRequestError(
            f"output_encoding {name[:50]!r} is not a text encoding Python knows",
            "use e.g. utf-8 or latin-1",
        )
    return info.name
