"""The gateway settings' connections: a target database or a shell command, and their rules.

Part of the one settings model (``settings.GatewaySettings.connections``); kept apart because a
connection's fields and checks are most of the settings. ``settings`` re-exports the names.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from airflow_hoop.gateway.masking.rules import MaskingPolicy
from airflow_hoop.wire.session_settings import SessionSettingName

#: Session settings a step may ask for unless its connection says otherwise: the timeouts and
#: an application_name prefix. search_path changes what unqualified names resolve to, so a
#: connection allows it explicitly.
DEFAULT_SESSION_SETTINGS: list[SessionSettingName] = [
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "application_name",
]

#: Largest number of review groups a rule may name: an any-k-of-n rule tries each set of k.
MAX_GROUPS = 10


class GroupNeed(BaseModel):
    """One review group of a rule and how many distinct people of it must approve."""

    model_config = ConfigDict(extra="forbid")

    group: str = Field(min_length=1)
    min_approvals: int = Field(1, ge=1)


class ApprovalRule(BaseModel):
    """Commands that need a human approval before the gateway runs them.

    ``required_for: writes`` covers every statement PostgreSQL's parser does not label ``read``
    or ``transaction_control`` (``ledger/sql_label.py``: conservative, anything not a plain
    SELECT/VALUES/TABLE/SHOW/EXPLAIN calling only built-in side-effect-free functions is a
    write; every shell command is a write); ``all`` covers every statement but transaction
    control.
    ``dags`` are fnmatch globs of DAG ids. An approval expires ``expires_after_seconds`` after it is granted and is
    used once.
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="shown as hoop's access_request_rule_name")
    required_for: Literal["writes", "all"] = "writes"
    dags: list[str] = Field(default_factory=lambda: ["*"])
    groups: list[str | GroupNeed] = Field(
        min_length=1,
        max_length=MAX_GROUPS,
        description="review groups: a name (one approval) or {group, min_approvals} "
        "(that many distinct people of the group)",
    )
    all_groups_must_approve: bool = Field(
        False, description="all-of: every group must approve (hoop's all_groups_must_approve)"
    )
    min_approvals: int = Field(
        1,
        ge=1,
        description="how many of the groups must approve (capped at len(groups), as hoop); "
        "1 (the default) is any-of",
    )
    break_glass_groups: list[str] = Field(
        default_factory=list,
        description="members may approve alone with force_review (hoop's force_approve_groups); "
        "every such approval is flagged 'break-glass' in the ledger, report and Audit tab",
    )
    expires_after_seconds: int = Field(3600, gt=0)
    triggerer_may_approve: bool = Field(
        False, description="may the Airflow user who triggered the DAG run approve its reviews"
    )

    @property
    def needs(self) -> list[GroupNeed]:
        """Each review group with the distinct people it needs."""
        return [GroupNeed(group=g) if isinstance(g, str) else g for g in self.groups]

    @property
    def group_names(self) -> list[str]:
        return [n.group for n in self.needs]

    @property
    def groups_needed(self) -> int:
        """How many groups must be satisfied: all of them, or ``min_approvals`` of them."""
        count = len(self.groups)
        return count if self.all_groups_must_approve else min(self.min_approvals, count)

    def describe(self) -> str:
        """Who must approve, in words: ``all of dba (2 people), sec; break-glass: oncall``."""
        needs = self.needs
        names = ", ".join(
            n.group + (f" ({n.min_approvals} people)" if n.min_approvals > 1 else "") for n in needs
        )
        count = self.groups_needed
        which = (
            "all of"
            if count == len(needs) and count > 1
            else f"{count} of"
            if count > 1
            else "any of"
        )
        glass = (
            f"; break-glass: {', '.join(self.break_glass_groups)}"
            if self.break_glass_groups
            else ""
        )
        return f"{which} {names}{glass}"

    @model_validator(mode="after")
    def _coherent(self) -> ApprovalRule:
        names = self.group_names
        if len(set(names)) != len(names):
            raise ValueError(f"approval rule {self.name!r}: a review group is listed twice")
        both = set(names) & set(self.break_glass_groups)
        if both:
            # A break-glass member must never approve unflagged as an ordinary reviewer.
            raise ValueError(
                f"approval rule {self.name!r}: {sorted(both)} are both review and break-glass "
                "groups; an approval by them could not be told apart. Fix: use separate groups"
            )
        if (
            self.all_groups_must_approve
            and "min_approvals" in self.model_fields_set
            and self.min_approvals != len(names)
        ):
            raise ValueError(
                f"approval rule {self.name!r}: all_groups_must_approve with min_approvals "
                f"{self.min_approvals} of {len(names)} groups. Fix: drop one of them"
            )
        return self


class PostgresConnection(BaseModel):
    """A target database reached through the gateway with per-step dynamic users."""

    name: str = Field(min_length=1)
    type: Literal["postgres"] = "postgres"
    host: str = "127.0.0.1"
    port: int = 5432
    database: str
    sslmode: str = "prefer"
    vault_role: str = Field(description="database secrets engine role: <mount>/creds/<vault_role>")
    vault_read_role: str | None = Field(
        None,
        description=(
            "database secrets engine role of the step's READ user (SELECT/USAGE grants only): "
            "every unapproved command under a 'required_for: writes' rule runs as it, in a "
            "read-only transaction; required when such a rule exists"
        ),
    )
    allowed_dags: list[str] = Field(
        default_factory=list, description="fnmatch globs of DAG ids; empty means nobody (deny)"
    )
    approvals: list[ApprovalRule] = Field(
        default_factory=list,
        description="commands that need a human approval; the first rule matching the DAG applies",
    )
    masking: MaskingPolicy | None = Field(
        None, description="what the output must not show (docs/masking.md); none: unmasked"
    )
    session_settings: list[SessionSettingName] = Field(
        default_factory=lambda: list(DEFAULT_SESSION_SETTINGS),
        description="session settings a step may set through the hook's options "
        "(statement_timeout, lock_timeout, idle_in_transaction_session_timeout, "
        "application_name prefix; search_path only when listed here)",
    )

    @model_validator(mode="after")
    def _reads_have_a_read_role(self) -> PostgresConnection:
        # Fail closed: unapproved reads must run as a user that cannot write, never as the
        # writer (docs/security.md, "The database is the guarantee").
        if self.vault_read_role is None and any(r.required_for == "writes" for r in self.approvals):
            raise ValueError(
                f"connection {self.name!r} has a 'required_for: writes' approval rule but no "
                "vault_read_role: unapproved reads must run as a read-only database user. "
                "Fix: create a Vault database role whose creation statements grant only "
                "SELECT/USAGE and set vault_read_role to it (docs/getting-started.md)"
            )
        return self


class ShellLimits(BaseModel):
    """Resource limits of a shell command, set with ``setrlimit(2)`` in the child before exec.

    ``None`` leaves a limit as the gateway process has it. ``RLIMIT_CORE`` is always 0: a core
    dump would hold the command's environment, credentials included.
    """

    model_config = ConfigDict(extra="forbid")

    address_space_bytes: int | None = Field(
        2 * 1024**3, gt=0, description="RLIMIT_AS: virtual memory of each process"
    )
    cpu_seconds: int | None = Field(None, gt=0, description="RLIMIT_CPU: CPU time of each process")
    open_files: int | None = Field(1024, gt=0, description="RLIMIT_NOFILE: open descriptors")
    file_size_bytes: int | None = Field(
        1024**3, gt=0, description="RLIMIT_FSIZE: largest file a process may write"
    )
    processes: int | None = Field(
        None, gt=0, description="RLIMIT_NPROC: processes of the (run_as) user; ignored for root"
    )


class ShellConnection(BaseModel):
    """hoop's ``custom`` connection: ``command`` runs on the gateway host, script on stdin.

    The command's environment is ``env`` plus the request's ``env_vars`` (the connection wins
    on a clash, as in hoop) plus, with ``database``, the step's dynamic database user as
    ``PGHOST``/``PGPORT``/``PGDATABASE``/``PGUSER``/``PGPASSWORD``. Nothing of the gateway's
    own environment is passed on.

    The command runs in a bubblewrap sandbox (``sandbox: bubblewrap``, docs/shell.md): its own
    PID, mount, IPC, UTS and network namespaces, read-only system directories, a private
    ``/tmp``, its fresh working directory (and a requested ``cwd``) as the only writable
    places, and no view of the gateway's files or other processes. ``network: none`` gives it
    only its own loopback; ``database`` then reaches PostgreSQL through a unix socket the
    gateway relays to that one database. ``sandbox: none`` runs it on the host as before; the
    session records and ``check-config`` say so.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    type: Literal["custom"] = "custom"
    command: list[str] = Field(default_factory=lambda: ["/bin/bash"], min_length=1)
    env: dict[str, str] = Field(
        default_factory=dict, description="base environment; PATH defaults to /usr/bin:/bin"
    )
    database: str | None = Field(
        None, description="a postgres connection whose vault_role issues the step's PG* user"
    )
    run_as_user: str | None = Field(
        None, description="OS user the command runs as (the gateway must be root to switch)"
    )
    run_as_group: str | None = None
    cwd_roots: list[str] = Field(
        default_factory=list, description="directories a request's cwd may be in; empty: none"
    )
    workdir_root: str | None = Field(None, description="where fresh working dirs are made")
    timeout_seconds: float = Field(3600.0, gt=0)
    kill_grace_seconds: float = Field(
        2.0, ge=0, description="SIGTERM to SIGKILL delay for the process group"
    )
    max_output_bytes: int | None = Field(
        None, gt=0, description="output cap; default: the gateway's max_output_bytes"
    )
    limits: ShellLimits = Field(default_factory=ShellLimits)
    sandbox: Literal["bubblewrap", "none"] = Field(
        "bubblewrap",
        description="bubblewrap: each command in its own namespaces (the gateway refuses the "
        "connection where they cannot be created); none: on the host, named in every record",
    )
    network: Literal["none", "host"] = Field(
        "none",
        description="none: the sandbox's own loopback only (database: through the gateway's "
        "relay); host: the gateway host's network, unfiltered (restrict it with a network policy)",
    )
    read_only_paths: list[str] = Field(
        default_factory=list,
        description="host directories or files the sandbox also sees, read-only (e.g. /opt/tools)",
    )
    allowed_dags: list[str] = Field(
        default_factory=list, description="fnmatch globs of DAG ids; empty means nobody (deny)"
    )
    approvals: list[ApprovalRule] = Field(
        default_factory=list,
        description="commands that need a human approval; the first rule matching the DAG applies",
    )
    masking: MaskingPolicy | None = Field(
        None, description="what the output must not show (docs/masking.md); none: unmasked"
    )

    @field_validator("read_only_paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not os.path.isabs(path):
                raise ValueError(f"read_only_paths: {path!r} is not an absolute path")
        return value

    @field_validator("masking")
    @classmethod
    def _masked_for_the_task_too(cls, value: MaskingPolicy | None) -> MaskingPolicy | None:
        if value is not None and value.allow_unmasked_to_task:
            raise ValueError(
                f"masking policy {value.name!r}: allow_unmasked_to_task is not supported on shell "
                "connections (their output is masked as it streams)"
            )
        return value


def _connection_type(value: Any) -> str:
    # Settings files written before shell connections existed have no ``type``: postgres.
    if isinstance(value, dict):
        return str(value.get("type", "postgres"))
    return str(getattr(value, "type", "postgres"))


Connection = Annotated[
    Annotated[PostgresConnection, Tag("postgres")] | Annotated[ShellConnection, Tag("custom")],
    Discriminator(_connection_type),
]
