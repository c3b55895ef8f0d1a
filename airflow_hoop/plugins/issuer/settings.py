"""The issuer's settings: one YAML file, readable only by the issuer's user."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError

from airflow_hoop.errors import ConfigError

#: The API server reads the issuer's settings from this file (unset: the issuer is off).
SETTINGS_ENV = "AIRFLOW_HOOP_ISSUER_SETTINGS"
#: Tokens live at most this long (the issue's bound; OpenBao trades them for a step login).
MAX_TTL_SECONDS = 300


class IssuerSettings(BaseModel):
    """Where the key is, what the tokens say about their issuer, and which database attests."""

    key_path: str = Field(description="Ed25519 private key (PEM), mode 0600, owned by this user")
    issuer: str = Field(description="the tokens' iss; OpenBao's bound_issuer")
    audiences: list[str] = Field(
        default_factory=lambda: ["openbao"], description="audiences a task may ask for"
    )
    ttl_seconds: int = Field(300, ge=30, le=MAX_TTL_SECONDS)
    metadata_db_url: str | None = Field(
        None,
        description="SQLAlchemy URL of Airflow's metadata database; None on the API server "
        "(Airflow's own [database] sql_alchemy_conn)",
    )
    host: str = "127.0.0.1"
    port: int = 0

    @classmethod
    def load(cls, path: str | Path) -> IssuerSettings:
        try:
            data = yaml.safe_load(Path(path).read_text())
            return cls.model_validate(data)
        except OSError as exc:
            raise ConfigError(
                f"cannot read the issuer settings {path}: {exc.strerror}",
                f"point {SETTINGS_ENV} (or --config) at the issuer's settings file",
            ) from None
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise ConfigError(
                f"the issuer settings {path} are invalid ({fields})",
                "see docs/identity.md for the fields",
            ) from None
