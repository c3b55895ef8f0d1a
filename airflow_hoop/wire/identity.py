"""The identity issuer's wire: a step's token request and answer, and the commitment rule.

A running task commits to a random secret through its rendered fields (which Airflow's own
supervisor writes under the task instance's id), then presents the secret to the issuer. The
rendered fields are readable in the UI and the REST API, so they hold only
``commitment(ti_id, secret)``: knowing it does not give the secret.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from pydantic import BaseModel, ConfigDict, Field

#: The template field (and rendered-fields key) that carries the commitment. Not a name
#: Airflow's secrets masker redacts (it redacts names with "secret", "token", "password"...).
COMMITMENT_FIELD = "hoop_step_commitment"
_DOMAIN = b"airflow-hoop step commitment v1\0"


def new_step_secret() -> str:
    """32 random bytes, base64url: what the task keeps and later presents once."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def commitment(ti_id: str, secret: str) -> str:
    """SHA-256 over a domain tag, the task instance's id (one try) and the secret, hex.

    Binding the id makes a commitment left in the rendered fields by an earlier try useless
    to the next one (each try has its own id).
    """
    return hashlib.sha256(_DOMAIN + ti_id.encode() + b"\0" + secret.encode()).hexdigest()


class StepTokenRequest(BaseModel):
    """What a task sends: which task instance it says it is (a lookup key only: every claim
    comes from Airflow's metadata database), the secret, and the audience it wants."""

    model_config = ConfigDict(extra="forbid")

    dag_id: str = Field(min_length=1, max_length=250)
    run_id: str = Field(min_length=1, max_length=250)
    task_id: str = Field(min_length=1, max_length=250)
    map_index: int = -1
    secret: str = Field(min_length=32, max_length=128)
    audience: str = Field(min_length=1, max_length=200)


class StepTokenResponse(BaseModel):
    """The issuer's answer: a JWT signed by the issuer's key, and when it expires."""

    token: str
    expires_at: int = Field(description="unix time")
    jti: str


class IssuerRefusal(BaseModel):
    """A 403 (or 503) body: the reason, and what to do about it."""

    reason: str
    fix: str
