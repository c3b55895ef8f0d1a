"""Gateway configuration: one pydantic settings model, from a YAML file and the environment.

Environment variables override the file: ``HOOP_GATEWAY_<FIELD>``, nested with ``__``
(e.g. ``HOOP_GATEWAY_VAULT__URL``). The file is named by ``HOOP_GATEWAY_CONFIG`` or passed
to ``airflow-hoop gateway serve --config``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from airflow_hoop.errors import ConfigError
from airflow_hoop.gateway.connection_settings import ApprovalRule as ApprovalRule
from airflow_hoop.gateway.connection_settings import Connection
from airflow_hoop.gateway.connection_settings import PostgresConnection as PostgresConnection
from airflow_hoop.gateway.connection_settings import ShellConnection as ShellConnection
from airflow_hoop.gateway.connection_settings import ShellLimits as ShellLimits
from airflow_hoop.gateway.masking.siblings import Reach, sibling_bypasses
from airflow_hoop.gateway.notification_settings import NotificationSettings
from airflow_hoop.gateway.observability_settings import ObservabilitySettings
from airflow_hoop.stream.settings import StreamSettings


class VaultAuth(BaseModel):
    """How the gateway itself logs in to Vault.

    ``token`` is for development; production uses ``approle`` (``role_id`` + ``secret_id``,
    ``mount``) or, in Kubernetes, ``kubernetes`` (the pod's service-account token read from
    ``service_account_token_path``, Vault role ``kubernetes_role`` at ``kubernetes_mount``).
    """

    method: Literal["token", "approle", "kubernetes"] = "token"
    token: SecretStr | None = None
    role_id: str | None = None
    secret_id: SecretStr | None = None
    mount: str = "approle"
    kubernetes_role: str | None = Field(None, description="Vault kubernetes auth role")
    kubernetes_mount: str = "kubernetes"
    service_account_token_path: str = Field(
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        description="the pod's (projected) service-account token, read at each login",
    )

    @model_validator(mode="after")
    def _complete(self) -> VaultAuth:
        if self.method == "token" and not self.token:
            raise ValueError("vault.auth.token is required when vault.auth.method is 'token'")
        if self.method == "approle" and not (self.role_id and self.secret_id):
            raise ValueError("vault.auth.role_id and vault.auth.secret_id are required for approle")
        if self.method == "kubernetes" and not self.kubernetes_role:
            raise ValueError("vault.auth.kubernetes_role is required for kubernetes")
        return self


class TlsSettings(BaseModel):
    """HTTPS for the gateway's listener (uvicorn): PEM certificate chain and private key.

    With ``client_ca_file`` the gateway also asks callers for a client certificate signed by
    that CA (mutual TLS, e.g. from the load balancer); ``require_client_cert`` refuses callers
    without one. Files are checked when the settings load, so ``check-config`` catches a typo.
    """

    model_config = ConfigDict(extra="forbid")

    cert_file: str = Field(description="PEM certificate (chain) the gateway presents")
    key_file: str = Field(description="PEM private key of the certificate")
    key_password: SecretStr | None = Field(None, description="password of an encrypted key")
    client_ca_file: str | None = Field(None, description="CA bundle for client certificates")
    require_client_cert: bool = False

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"file {value} does not exist or is not readable by the gateway")
        return value

    @model_validator(mode="after")
    def _client_ca_for_required(self) -> TlsSettings:
        if self.require_client_cert and not self.client_ca_file:
            raise ValueError("require_client_cert needs client_ca_file")
        return self


class GatewayVault(BaseModel):
    url: str
    namespace: str | None = None
    auth: VaultAuth
    database_mount: str = "database"
    transit_mount: str = "transit"
    checkpoint_key: str = "ledger-checkpoint"
    identity_issuer: str = Field(
        description="expected 'iss' of step identity tokens, e.g. <vault>/v1/identity/oidc"
    )
    identity_audience: str = "hoop-gateway"
    accept_trusted_workers: bool = Field(
        False,
        description="'trusted workers' mode: also run steps whose claims a worker signed "
        "itself (attested_by trusted-workers); off, only steps the identity issuer attested "
        "(claims from Airflow's metadata database) run",
    )
    jwks_cache_seconds: int = 300
    max_identity_token_seconds: int = Field(
        600,
        gt=0,
        description="longest lifetime (exp - iat) of a step identity token the gateway "
        "accepts: bounds how long a token outlives its step's Vault token when the step is "
        "not ended on the gateway (identity role ttl: 5m in deploy/vault/setup.sh)",
    )
    token_recheck_seconds: float = Field(
        1.0,
        ge=0,
        description="how long Vault's answer that a step's own Vault token is alive (looked "
        "up by the accessor each request names) is trusted; 0: asked on every request. After "
        "an out-of-band revocation, requests are refused at most this much later",
    )
    step_token_policies: list[str] = Field(default_factory=lambda: ["hoop-step-creds"])
    step_token_ttl_seconds: int = 900
    masking_kv_mount: str = Field("secret", description="KV v2 mount of masking HMAC keys")
    masking_key_path: str = Field(
        "airflow-hoop/masking", description="path under the mount; a policy's hmac_key is below it"
    )
    masking_key_cache_seconds: int = Field(300, description="re-read masking keys after this")


class RecoverySettings(BaseModel):
    """How a gateway process proves it is alive, and when another may close its sessions.

    Each process heartbeats its row in ``gateway_instances`` every ``heartbeat_seconds``; a
    process whose heartbeat is older than ``stale_after_seconds`` (by the database's clock) is
    declared dead, fenced, and its open sessions and unrevoked leases are closed by the sweep
    (``gateway/ledger_io/recovery.py``, docs/faults.md). A process on the same host whose PID
    is gone is declared dead at once.
    """

    model_config = ConfigDict(extra="forbid")

    heartbeat_seconds: float = Field(5.0, gt=0)
    stale_after_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _stale_after_heartbeats(self) -> RecoverySettings:
        if self.stale_after_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                "recovery.stale_after_seconds must be at least twice heartbeat_seconds, "
                "or a live gateway could be declared dead between two heartbeats"
            )
        return self


class CheckpointSettings(BaseModel):
    """When the gateway signs a ledger checkpoint, and where it anchors a copy.

    A checkpoint is signed once ``every_records`` records have arrived since the last one, or
    ``interval_seconds`` after it while any record has arrived: with traffic, at least every
    ``interval_seconds`` (plus ``poll_seconds``).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    every_records: int = Field(1000, ge=1)
    interval_seconds: float = Field(30.0, gt=0)
    poll_seconds: float = Field(1.0, gt=0, description="how often the head is looked at")
    anchor_dir: str | None = Field(
        None,
        description="directory anchor sink (append-only copy of every checkpoint, outside the "
        "database); production uses object storage with a retention lock",
    )
    key_validity_seconds: float = Field(
        86400.0,
        ge=60,
        description="how long a gateway process's batch key is certified for; a new key is "
        "made and certified at half of it (ledger_io/process_key.py)",
    )
    replica: str | None = Field(
        None, description="this replica's name in its key certificates (default: host name)"
    )


class ApiKey(BaseModel):
    """A hoop-style ``hpk_`` API key, stored as its SHA-256 hex digest only."""

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: Literal["auditor", "admin", "approver"] = "auditor"
    groups: list[str] = Field(
        default_factory=list, description="review groups this key may decide for (approver, admin)"
    )
    asserts_users: bool = Field(
        False,
        description="the key belongs to a UI (the Airflow plugin) that names the user who decided; "
        "its decisions are recorded with channel 'airflow-ui'",
    )
    person: str | None = Field(
        None,
        description="the Airflow user who holds this key: its decisions are that person's, so "
        "nobody approves twice (key and UI) or approves a run they triggered with their key",
    )

    @model_validator(mode="after")
    def _one_person(self) -> ApiKey:
        # A UI key speaks for many users (each decision names one); a person's key for one.
        if self.asserts_users and self.person:
            raise ValueError(
                f"api key {self.name!r}: asserts_users and person exclude each other. Fix: "
                "drop person from the UI's key"
            )
        return self

    @staticmethod
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()


class GatewaySettings(BaseSettings):
    """Everything the gateway process needs. Validated at start; errors name the key."""

    model_config = SettingsConfigDict(
        env_prefix="HOOP_GATEWAY_", env_nested_delimiter="__", extra="forbid"
    )

    host: str = "127.0.0.1"
    port: int = 8009
    tls: TlsSettings | None = Field(None, description="HTTPS listener; none: plain HTTP")
    database_dsn: SecretStr = Field(description="libpq DSN of the gateway's own database")
    vault: GatewayVault
    connections: list[Connection] = Field(default_factory=list)
    api_keys: list[ApiKey] = Field(default_factory=list)
    sync_timeout_seconds: float = Field(50.0, description="hoop's sync window before a 202")
    max_script_bytes: int = 1_048_576
    max_request_bytes: int = 2_097_152
    step_idle_seconds: int = Field(
        600, description="release a step's credential after this idle time"
    )
    token_leeway_seconds: int = Field(
        30,
        ge=0,
        description="allowed clock skew between Vault and the gateway on identity tokens' "
        "exp/iat/nbf (docs/faults.md)",
    )
    max_result_rows: int = 100_000
    # Added for the gateway runtime; all have defaults so existing settings files stay valid.
    pool_min_size: int = Field(2, description="gateway database pool: connections kept open")
    pool_max_size: int = Field(10, description="gateway database pool: upper bound")
    reaper_interval_seconds: float = Field(
        2.0, description="how often idle or expiring step credentials are looked for"
    )
    lease_expiry_margin_seconds: int = Field(
        30, description="release a step's credential this long before its lease expires"
    )
    vault_timeout_seconds: float = Field(10.0, description="timeout of one Vault request")
    target_connect_timeout_seconds: int = Field(
        10, description="timeout to open a target connection"
    )
    max_output_bytes: int = Field(
        16_777_216, description="cap of the text output of one session (hoop's 'truncated')"
    )
    checkpoints: CheckpointSettings = Field(
        default_factory=CheckpointSettings,
        description="signed ledger checkpoints and their anchor (see docs/reviewer-guide.md)",
    )
    recovery: RecoverySettings = Field(
        default_factory=RecoverySettings,
        description="heartbeat and sweep of sessions left by a dead gateway (docs/faults.md)",
    )
    notifications: NotificationSettings = Field(
        default_factory=NotificationSettings,
        description="approval notifications: the signed webhook (docs/notifications.md)",
    )
    observability: ObservabilitySettings = Field(
        default_factory=ObservabilitySettings,
        description="log format and level, /metrics, readiness (docs/operations.md)",
    )
    siem_stream: StreamSettings | None = Field(
        None,
        description="the ledger streamed to a SIEM by the gateway itself, off unless "
        "enabled (docs/signals.md)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _connections_consistent(self) -> GatewaySettings:
        names = [c.name for c in self.connections]
        if len(names) != len(set(names)):
            raise ValueError("connection names must be unique")
        for conn in self.connections:
            if (
                isinstance(conn, ShellConnection)
                and conn.database is not None
                and not isinstance(self.connection(conn.database), PostgresConnection)
            ):
                raise ValueError(
                    f"connection {conn.name!r}: database {conn.database!r} "
                    "is not a postgres connection of this gateway"
                )
        problems = sibling_bypasses(self._reaches())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _reaches(self) -> list[Reach]:
        """The database each connection's output comes from (shell: its ``database:``)."""
        reaches = []
        for conn in self.connections:
            target = (
                self.connection(conn.database or "") if isinstance(conn, ShellConnection) else conn
            )
            if not isinstance(target, PostgresConnection):
                continue  # a shell connection without a database user
            reaches.append(
                Reach(
                    connection=conn.name,
                    shell=isinstance(conn, ShellConnection),
                    host=target.host,
                    port=target.port,
                    database=target.database,
                    vault_role=target.vault_role,
                    masking=conn.masking,
                )
            )
        return reaches

    def connection(self, name: str) -> PostgresConnection | ShellConnection | None:
        return next((c for c in self.connections if c.name == name), None)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> GatewaySettings:
        """Load from a YAML file (or ``$HOOP_GATEWAY_CONFIG``) plus the environment."""
        path = path or os.environ.get("HOOP_GATEWAY_CONFIG")
        data: dict[str, Any] = {}
        if path:
            try:
                data = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"cannot read gateway settings file {path}: {exc}") from None
        try:
            return cls(**data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(
                f"invalid gateway settings ({problems})", "correct the named keys in the file"
            ) from None
