"""Typed errors. Each names the failing link of the chain and the fix.

The message format is fixed so that a task log line is enough to act on:
``[<link>] <what happened>. Fix: <what to do>``.
"""

from __future__ import annotations


class HoopError(Exception):
    """Base class: a governed step could not proceed. Never carries a secret."""

    link = "airflow-hoop"
    default_fix = "see the airflow-hoop documentation"

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = what
        self.fix = fix or self.default_fix
        super().__init__(f"[{self.link}] {what}. Fix: {self.fix}")


class ConfigError(HoopError):
    """A connection or settings file is missing a value or holds a wrong one."""

    link = "configuration"
    default_fix = "correct the named setting"


class IdentityError(HoopError):
    """The step identity could not be built or proven."""

    link = "step identity"
    default_fix = "run the step inside an Airflow task with a valid 'hoop' connection"


class VaultError(HoopError):
    """Vault/OpenBao refused or could not be reached."""

    link = "vault"
    default_fix = "check that Vault is reachable at the configured URL and the auth role exists"


class GatewayUnavailableError(HoopError):
    """The gateway could not be reached or answered with a server error."""

    link = "gateway"
    default_fix = "check that the gateway runs and the 'hoop' connection's host is its URL"


class GatewayAuthError(HoopError):
    """The gateway refused the step's identity token (401)."""

    link = "gateway auth"
    default_fix = "check the Vault identity token role and the gateway's trusted issuer"


class StepEndedError(GatewayAuthError):
    """The step's identity token names a step that has ended (401); the refusal is recorded."""

    default_fix = (
        "a step's token dies with the step: start a new task try, which gets its own identity"
    )


class VaultTokenGoneError(GatewayAuthError):
    """The Vault token a step's request names is revoked or expired (401); the refusal is
    recorded and what the gateway held for the step is released."""

    default_fix = "a step's requests end with its Vault token; a running task logs in again"


class StepElsewhereError(HoopError):
    """Another gateway process holds the step (409); nothing ran, the refusal is recorded."""

    link = "gateway replica"
    default_fix = (
        "route every request of a step to one gateway replica (the load balancer's rule on "
        "the X-Hoop-Step header, docs/deploy.md); the client retries on a new connection"
    )

    def __init__(self, what: str, owner: str, fix: str | None = None) -> None:
        super().__init__(what, fix)
        self.owner = owner


class PolicyRefusedError(HoopError):
    """The gateway's policy refused the step (403); the refusal is in the ledger."""

    link = "gateway policy"
    default_fix = (
        "allow this DAG on the connection in the gateway's policy, or use another connection"
    )


class BadRequestError(HoopError):
    """The gateway refused the request as malformed (4xx)."""

    link = "gateway request"
    default_fix = "correct the request"


class LedgerError(HoopError):
    """The ledger refused a write or a record does not verify."""

    link = "ledger"
    default_fix = "check the gateway database; no command runs without its ledger record"


class CommandFailedError(HoopError):
    """The command ran and failed on the target (SQL error, non-zero exit)."""

    link = "target"
    default_fix = "fix the command; the target's own message is above"


class SessionKilledError(HoopError):
    """The session was killed before it finished."""

    link = "gateway session"
    default_fix = "re-run the task; the kill is recorded in the ledger"


class ChainBrokenError(LedgerError):
    """The ledger stream met a record that does not chain: it was not delivered."""

    link = "ledger stream"
    default_fix = (
        "do not trust the ledger past the named record: run `airflow-hoop audit verify` and "
        "investigate; the stream resumes only once the chain links again"
    )

    def __init__(self, seq: int, what: str, fix: str | None = None) -> None:
        super().__init__(f"record {seq} {what}", fix)
        self.seq = seq


class SinkError(HoopError):
    """A SIEM sink refused or could not take a batch; the cursor did not move past it."""

    link = "SIEM sink"
    default_fix = (
        "check the sink's address, TLS and credentials; the stream resumes from its cursor "
        "and delivers the batch again"
    )


class IssuerError(HoopError):
    """The identity issuer refused to mint a step token (403) or could not be reached."""

    link = "identity issuer"
    default_fix = (
        "request the token from inside the running task instance, after its rendered fields "
        "hold the step's commitment (docs/identity.md)"
    )
