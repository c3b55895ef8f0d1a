"""The Airflow side of one governed step: its Vault login, its gateway client, and its end.

A step is one try of one task instance. Its first governed statement logs in to Vault; the
step ends when the task ends (operator ``finally``, the task listener, or process exit),
whichever comes first: the gateway closes the step's connections and revokes its database
users, then the task revokes its own Vault token. Nothing the step held outlives it.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from airflow_hoop.client.http import GatewayClient
from airflow_hoop.errors import HoopError
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.task.step_evidence import note_end
from airflow_hoop.task.vault import StepVaultSession
from airflow_hoop.task.vault_config import StepVaultConfig
from airflow_hoop.wire.sessions import RevokeMode

log = logging.getLogger(__name__)


#: ``airflow-hoop``: our gateway (typed rows, bound parameters, per-step users, ledger);
#: ``hoop.dev``: a plain hoop gateway (text output only; see docs/hoop.md).
GatewayKind = Literal["airflow-hoop", "hoop.dev"]


class HoopConnectionConfig(BaseModel):
    """Everything the task side needs to govern a step (built from a ``hoop`` connection).

    The step proves who it is with a Vault login (``vault``) or, against a hoop.dev gateway,
    with a hoop ``hpk_`` API key (``api_key``): then there is no Vault step identity and the
    step travels only in the session's ``metadata`` and ``correlation_id``.
    """

    gateway_url: str
    vault: StepVaultConfig | None = None
    api_key: SecretStr | None = Field(None, description="hoop.dev API key (hpk_...), as bearer")
    gateway_kind: GatewayKind | None = Field(
        None, description="None: hoop.dev with an API key, airflow-hoop otherwise"
    )
    ca_file: str | None = Field(
        None,
        description="PEM file of the private CA that signs the gateway's (and, unless "
        "vault's own ca_file says otherwise, Vault's) certificate; default: the public CAs",
    )
    timeout_seconds: float = 75.0
    poll_interval_seconds: float = 0.5
    revoke_at_end: RevokeMode = Field(
        "background",
        description="background: the step's end returns once the gateway closed the step's "
        "connections and started revoking its database users (recorded right after); "
        "wait: once they are revoked and recorded (one Vault round trip chain slower)",
    )

    @model_validator(mode="after")
    def _one_identity(self) -> HoopConnectionConfig:
        if (self.vault is None) == (self.api_key is None):
            raise ValueError("give either a Vault login (vault) or a hoop API key (api_key)")
        if self.api_key is not None:
            if not self.api_key.get_secret_value().startswith("hpk_"):
                raise ValueError("api_key is not a hoop API key (they start with hpk_)")
            if self.gateway_kind == "airflow-hoop":
                raise ValueError(
                    "the airflow-hoop gateway runs commands only for steps with a Vault "
                    "identity: use auth jwt, approle or token, or gateway_kind hoop.dev"
                )
        if self.gateway_kind is None:
            self.gateway_kind = "hoop.dev" if self.api_key is not None else "airflow-hoop"
        return self

    @property
    def hoop_dev(self) -> bool:
        """A plain hoop.dev gateway: no typed rows, no bound parameters, no step end call."""
        return self.gateway_kind == "hoop.dev"


class GovernedStep:
    """One step's Vault session and gateway client; ``end()`` releases both."""

    def __init__(self, config: HoopConnectionConfig, step: StepRef) -> None:
        self.config = config
        self.step = step
        self.vault = StepVaultSession(config.vault, step) if config.vault is not None else None
        self.client = GatewayClient(
            config.gateway_url,
            token=self.vault.identity_token if self.vault is not None else _api_key(config),
            timeout=config.timeout_seconds,
            poll_interval=config.poll_interval_seconds,
            step_key=step.key,
            vault_accessor=self.vault.accessor if self.vault is not None else None,
            ca_file=config.ca_file,
        )
        self.used_gateway = False
        self.running_session: str | None = None

    def end(self) -> None:
        """Release everything; raises only after trying every release.

        The gateway's release (database user) and the Vault token revoke do not depend on
        each other, so they run side by side: the step's end costs the slower of the two.

        On return the step's Vault token is revoked and the gateway has closed the step's
        database connections, so nothing more runs as the step. With ``revoke_at_end``
        ``background`` (the default) the gateway revokes the database users and records
        ``credential.revoked`` right after answering; ``wait`` returns only once that is done.
        """
        problems: list[str] = []
        token = None
        if self.vault is None:
            # An API key is the deployment's, not the step's: nothing to revoke, and hoop.dev
            # has no step to end (its connections hold static credentials).
            self.client.close()
            return
        # Any step that ever held an identity token is ended on the gateway (an approval
        # request or an agent's tool call too): a step's token dies with the step.
        if (self.used_gateway or self.vault.issued_identity) and not self.config.hoop_dev:
            try:  # taken before the revoke below can clear it
                token = self.vault.identity_token()
            except HoopError as exc:
                problems.append(str(exc))
        # The Vault revoke in one helper thread, the gateway's end in this one.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hoop-step-end") as pool:
            vault = pool.submit(self.vault.revoke)
            if token:
                try:
                    self._end_on_gateway(token)
                except HoopError as exc:
                    # The gateway also releases idle steps and Vault expires the lease: go on.
                    problems.append(str(exc))
            try:
                if vault.result():
                    log.info("step %s: Vault token revoked", self.step.key)
            except HoopError as exc:
                problems.append(str(exc))
        self.client.close()
        if problems:
            raise HoopError("; ".join(problems), "the leases expire on their own at their TTL")

    def _end_on_gateway(self, token: str) -> None:
        ended = self.client.end_step(token=token, revoke=self.config.revoke_at_end)
        note_end(self.step, ended.checkpoint)
        if ended.revoked_db_users:
            done = "revoked" if ended.revocation == "done" else "closed and is revoking"
            log.info("step %s: gateway %s %s", self.step.key, done, ended.revoked_db_users)

    def kill_running(self) -> None:
        """Ask the gateway to stop the statement this step is running, if any."""
        if self.running_session:
            self.client.kill(self.running_session)


def _api_key(config: HoopConnectionConfig) -> Callable[[], str]:
    key = config.api_key
    assert key is not None
    return key.get_secret_value


_lock = threading.Lock()
_steps: dict[tuple[str, str], GovernedStep] = {}


def step_for(config_id: str, config: HoopConnectionConfig, step: StepRef) -> GovernedStep:
    """The process's one GovernedStep for this step and ``hoop`` connection."""
    with _lock:
        key = (config_id, step.key)
        governed = _steps.get(key)
        if governed is None:
            governed = _steps[key] = GovernedStep(config, step)
        return governed


def active_steps() -> list[GovernedStep]:
    with _lock:
        return list(_steps.values())


def end_all_steps() -> list[str]:
    """End every step of this process; returns the problems met (already logged)."""
    with _lock:
        steps = list(_steps.values())
        _steps.clear()
    problems = []
    for governed in steps:
        try:
            governed.end()
        except HoopError as exc:
            log.warning("step %s did not end cleanly: %s", governed.step.key, exc)
            problems.append(str(exc))
    return problems


def kill_all_steps() -> None:
    """Stop running statements of every step of this process (task kill)."""
    for governed in active_steps():
        try:
            governed.kill_running()
        except HoopError as exc:
            log.warning("could not kill the running session of %s: %s", governed.step.key, exc)


atexit.register(end_all_steps)
