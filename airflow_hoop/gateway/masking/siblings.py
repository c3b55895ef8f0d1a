"""Masking cannot be talked around through a sibling connection to the same database.

A masking policy is the gateway's filter on one connection's output. Another connection that
reaches the same database would return the same values through another door: a shell
connection whose ``database:`` hands the step a user of that database (``psql -c "COPY ...
TO STDOUT"``), or a second, unmasked postgres connection with the same Vault role (the same
database privileges). The settings refuse both (``GatewaySettings``), naming both connections.

Two masked postgres connections with different policies are allowed: each is an explicit
decision about that connection's output. Unmasked access to masked data needs a Vault role of
its own, whose grants the database administrator decides.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel

from airflow_hoop.gateway.masking.rules import MaskingPolicy


class Reach(BaseModel):
    """Where one connection's output comes from: a database, the Vault role of its users, and
    the policy that masks the output (``None``: unmasked)."""

    connection: str
    shell: bool
    host: str
    port: int
    database: str
    vault_role: str
    masking: MaskingPolicy | None

    def database_key(self) -> tuple[str, int, str]:
        return (_host_key(self.host), self.port, self.database)

    def where(self) -> str:
        return f"{self.database}@{self.host}:{self.port}"


def _host_key(host: str) -> str:
    """Loopback names are one host; other names are compared as written (DNS is not asked:
    two names of one server are a remaining gap, see docs/masking.md)."""
    name = host.strip().lower().rstrip(".")
    if name == "localhost":
        return "loopback"
    try:
        return "loopback" if ipaddress.ip_address(name).is_loopback else name
    except ValueError:
        return name


def sibling_bypasses(reaches: list[Reach]) -> list[str]:
    """One message per connection that would show what a sibling masks (empty: none)."""
    masked = [(r, r.masking) for r in reaches if not r.shell and r.masking is not None]
    problems: list[str] = []
    for reach in reaches:
        for sibling, policy in masked:
            if sibling is reach or sibling.database_key() != reach.database_key():
                continue
            if reach.shell:
                problem = _shell_problem(reach, sibling, policy)
            elif reach.masking is None and reach.vault_role == sibling.vault_role:
                problem = (
                    f"connection {reach.connection!r} reaches database {reach.where()} with "
                    f"Vault role {reach.vault_role!r} unmasked, which connection "
                    f"{sibling.connection!r} masks (policy {policy.name!r}); give "
                    f"{reach.connection!r} a masking policy, or a Vault role of its own whose "
                    "grants decide what it may read"
                )
            else:
                problem = None
            if problem:
                problems.append(problem)
    return problems


def _shell_problem(shell: Reach, sibling: Reach, policy: MaskingPolicy) -> str | None:
    head = (
        f"connection {shell.connection!r} reaches database {shell.where()} which connection "
        f"{sibling.connection!r} masks (policy {policy.name!r})"
    )
    if not policy.detectors and not policy.custom:
        # Column rules match result columns by name; a shell's output is text without columns.
        return (
            f"{head}; that policy masks columns only, which a shell's text output does not "
            f"have: give policy {policy.name!r} detectors for the values its columns hold and "
            f"{shell.connection!r} the same, or point {shell.connection!r} elsewhere"
        )
    have = shell.masking
    have_detectors = {d.name for d in have.detectors} if have else set()
    have_custom = {(c.name, c.regex) for c in have.custom} if have else set()
    missing = sorted({d.name for d in policy.detectors} - have_detectors)
    # A custom detector of the same name but another expression does not find the same values.
    missing_custom = sorted(
        name for name, _ in {(c.name, c.regex) for c in policy.custom} - have_custom
    )
    if have is not None and not missing and not missing_custom:
        return None
    wanted = f"the detectors {missing}" if missing else ""
    if missing_custom:
        wanted += (" and " if wanted else "") + f"the custom detectors {missing_custom}"
    return (
        f"{head}; give {shell.connection!r} a masking policy with at least {wanted} "
        "or point it elsewhere"
    )
