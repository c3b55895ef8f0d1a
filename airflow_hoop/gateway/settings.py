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
from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from airflow_hoop.errors import ConfigError


class VaultAuth(BaseModel):
    """How the gateway itself logs in to Vault (a token in dev; AppRole in production)."""

    method: Literal["token", "approle"] = "token"
    token: SecretStr | None = None
    role_id: str | None = None
    secret_id: SecretStr | None = None
    mount: str = "approle"

    @model_validator(mode="after")
    def _complete(self) -> VaultAuth:
        if self.method == "token" and not self.token:
            raise ValueError("vault.auth.token is required when vault.auth.method is 'token'")
        if self.method == "approle" and not (self.role_id and self.secret_id):
            raise ValueError("vault.auth.role_id and vault.auth.secret_id are required for approle")
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
    jwks_cache_seconds: int = 300
    step_token_policies: list[str] = Field(default_factory=lambda: ["hoop-step-creds"])
    step_token_ttl_seconds: int = 900


class PostgresConnection(BaseModel):
    """A target database reached through the gateway with per-step dynamic users."""

    name: str = Field(min_length=1)
    type: Literal["postgres"] = "postgres"
    host: str = "127.0.0.1"
    port: int = 5432
    database: str
    sslmode: str = "prefer"
    vault_role: str = Field(description="database secrets engine role: <mount>/creds/<vault_role>")
    allowed_dags: list[str] = Field(
        default_factory=list, description="fnmatch globs of DAG ids; empty means nobody (deny)"
    )


class ApiKey(BaseModel):
    """A hoop-style ``hpk_`` API key, stored as its SHA-256 hex digest only."""

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: Literal["auditor", "admin"] = "auditor"

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
    database_dsn: SecretStr = Field(description="libpq DSN of the gateway's own database")
    vault: GatewayVault
    connections: list[PostgresConnection] = Field(default_factory=list)
    api_keys: list[ApiKey] = Field(default_factory=list)
    sync_timeout_seconds: float = Field(50.0, description="hoop's sync window before a 202")
    max_script_bytes: int = 1_048_576
    max_request_bytes: int = 2_097_152
    step_idle_seconds: int = Field(
        600, description="release a step's credential after this idle time"
    )
    token_leeway_seconds: int = Field(30, description="allowed clock skew on identity tokens")
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

    def connection(self, name: str) -> PostgresConnection | None:
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
