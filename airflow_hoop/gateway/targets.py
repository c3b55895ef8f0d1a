"""The connections a command runs on, as types: one class per kind of connection.

The exec path asks a connection the same questions whatever its kind; each class answers them
for its kind, so callers call a method instead of testing the type: may the script be empty,
what the command is besides its script and what an approval binds (``prepare``), the
script's label (a ``writes`` rule exempts ``read`` and ``transaction_control``), whether
hoop's ``/exec`` of a reviewed session can run it, how a step's context is opened on it, and how ``check-config``
describes it.

The classes wrap the settings models (``settings.Connection``), which stay configuration
only: these behaviours need the runners and the step registry, which themselves read the
settings, and a shell connection's target also holds the database connection it names, which
only the whole settings know.
"""

from __future__ import annotations

from typing import Any, Generic, NamedTuple, TypeVar

from airflow_hoop.errors import PolicyRefusedError
from airflow_hoop.gateway.execution.runners.shell import ShellInvocation
from airflow_hoop.gateway.execution.shell_exec import approval_parameters, shell_invocation
from airflow_hoop.gateway.execution.steps import StepContext, StepRegistry
from airflow_hoop.gateway.masking.rules import MaskingPolicy
from airflow_hoop.gateway.settings import (
    ApprovalRule,
    GatewaySettings,
    PostgresConnection,
    ShellConnection,
)
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.ledger.sql_label import ScriptLabel, label_sql
from airflow_hoop.wire.sessions import ExecRequest


class Prepared(NamedTuple):
    """A command checked for its kind of connection, ready for the approval check and the run."""

    #: What the shell runner starts (None for SQL).
    shell: ShellInvocation | None
    #: What an approval binds besides the script.
    approval_parameters: Any


#: No parser can tell what a shell script does: every shell command counts as a write.
_SHELL_LABEL = ScriptLabel("write", why="every shell command counts as a write")

_C = TypeVar("_C", PostgresConnection, ShellConnection)


class _Configured(Generic[_C]):
    """What every kind answers alike, from its settings model."""

    def __init__(self, connection: _C) -> None:
        self.connection: _C = connection

    @property
    def name(self) -> str:
        return self.connection.name

    @property
    def approvals(self) -> list[ApprovalRule]:
        return self.connection.approvals

    @property
    def masking(self) -> MaskingPolicy | None:
        return self.connection.masking


class PostgresTarget(_Configured[PostgresConnection]):
    """A target database: SQL runs as the step's dynamic user."""

    #: Empty SQL is not a command.
    accepts_empty_script = False
    #: hoop's ``POST /api/sessions/{id}/exec`` runs the statements of a SQL review.
    runs_reviewed_sessions = True
    #: Unapproved commands under a ``writes`` rule run as the READ user, read-only.
    has_read_mode = True

    def prepare(self, req: ExecRequest, wire_parameters: Any) -> Prepared:
        """An approval binds the statement's parameters as sent.

        Raises PolicyRefusedError for a session setting the connection does not allow.
        """
        requested = req.airflow_hoop.session_settings if req.airflow_hoop else None
        if requested is not None:
            allowed = self.connection.session_settings
            for name, _value in requested.items():
                if name not in allowed:
                    raise PolicyRefusedError(
                        f"connection {self.name!r} does not allow the session setting {name} "
                        f"(allowed: {', '.join(allowed) or 'none'})",
                        "drop it from the hook's options, or have the gateway's administrators "
                        f"list it in session_settings of connection {self.name!r}",
                    )
        return Prepared(shell=None, approval_parameters=wire_parameters)

    def label(self, script: str, parameterized: bool) -> ScriptLabel:
        """What PostgreSQL's parser makes of the script (``ledger/sql_label.py``)."""
        return label_sql(script, parameterized)

    async def open_context(
        self, registry: StepRegistry, step: StepRef, *, read_only: bool = False
    ) -> StepContext:
        return await registry.open_postgres(step, self.connection, read_only=read_only)

    def describe(self) -> str:
        conn = self.connection
        return (
            f"postgres {conn.host}:{conn.port}/{conn.database} (sslmode {conn.sslmode}), "
            f"per-step users from Vault role {conn.vault_role}"
            + (
                f", unapproved reads as Vault role {conn.vault_read_role} in read-only transactions"
                if conn.vault_read_role
                else ""
            )
        )


class ShellTarget(_Configured[ShellConnection]):
    """hoop's ``custom`` connection: a command on the gateway host, the script on its stdin."""

    #: An empty shell script is a valid command (it does nothing).
    accepts_empty_script = True
    runs_reviewed_sessions = False
    #: Every shell command counts as a write: it never runs unapproved under a rule.
    has_read_mode = False

    def __init__(self, connection: ShellConnection, database: PostgresConnection | None) -> None:
        super().__init__(connection)
        #: The postgres connection whose dynamic user the command gets as ``PG*``, if any.
        self.database = database

    def prepare(self, req: ExecRequest, wire_parameters: Any) -> Prepared:
        """The validated invocation; an approval binds its client_args, cwd and environment.

        Raises BadRequestError, or PolicyRefusedError for a cwd outside the connection's roots
        or for session settings (a shell has no database session to set them on).
        """
        if req.airflow_hoop is not None and req.airflow_hoop.session_settings is not None:
            raise PolicyRefusedError(
                f"connection {self.name!r} runs shell commands: session settings "
                f"({', '.join(n for n, _ in req.airflow_hoop.session_settings.items())}) "
                "have no database session to apply to",
                "drop the options, or set them in the command (PGOPTIONS)",
            )
        shell = shell_invocation(req, self.connection)
        return Prepared(shell=shell, approval_parameters=approval_parameters(req, shell))

    def label(self, script: str, parameterized: bool) -> ScriptLabel:
        return _SHELL_LABEL

    async def open_context(
        self, registry: StepRegistry, step: StepRef, *, read_only: bool = False
    ) -> StepContext:
        # Every shell command counts as a write (``only_reads``): never asked for a read mode.
        if read_only:
            raise ValueError("a shell connection has no read-only mode")
        return await registry.open_shell(step, self.connection, self.database)

    def describe(self) -> str:
        conn = self.connection
        user = f" as {conn.run_as_user}" if conn.run_as_user else ""
        database = f", PG* user from {conn.database}" if conn.database else ""
        if conn.sandbox == "none":
            sandbox = "NO sandbox (sandbox: none): commands see the gateway host"
        elif conn.network == "host":
            sandbox = "sandbox bubblewrap, network host (unfiltered)"
        else:
            relay = " (database through the gateway's relay)" if conn.database else ""
            sandbox = f"sandbox bubblewrap, network none{relay}"
        return f"custom command {' '.join(conn.command)}{user}{database}; {sandbox}"


Target = PostgresTarget | ShellTarget


def as_target(
    connection: PostgresConnection | ShellConnection, settings: GatewaySettings
) -> Target:
    """The target of a configured connection: the one place that tells the kinds apart."""
    if isinstance(connection, ShellConnection):
        database = settings.connection(connection.database) if connection.database else None
        # The settings accept only a postgres connection here (their own validator).
        return ShellTarget(
            connection, database if isinstance(database, PostgresConnection) else None
        )
    return PostgresTarget(connection)


def target_for(settings: GatewaySettings, name: str) -> Target | None:
    """The target of the connection named ``name``, or None when there is none."""
    connection = settings.connection(name)
    return None if connection is None else as_target(connection, settings)
