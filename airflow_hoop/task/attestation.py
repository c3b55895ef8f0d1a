"""The task's half of the issuer's proof: a secret it keeps, a commitment it publishes.

The commitment reaches Airflow's metadata database through the task's rendered fields, which
the task's supervisor writes under its own task-instance id. Two ways in:

* a hoop operator fills its ``hoop_step_commitment`` template field just before Airflow renders
  and records the fields (``operators/step_commitment.py``): no extra round trip;
* a hook used inside any other task (a ``@task`` function) sends the SDK's rendered-fields
  message once, with the task's rendered fields plus the commitment (``hooks/commit.py``).

Secrets live only in this process's memory and are handed out once. This module does not
import Airflow: the hooks layer registers the supervisor path (``set_committer``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from airflow_hoop.errors import IdentityError
from airflow_hoop.wire.identity import commitment, new_step_secret

_lock = threading.Lock()
_secrets: dict[str, str] = {}
#: Publishes a commitment for the running task instance (set by the hooks layer).
_committer: Callable[[str], None] | None = None


def prepare(ti_id: str) -> str:
    """A new secret for this try, kept here; returns the commitment to publish."""
    secret = new_step_secret()
    with _lock:
        _secrets[ti_id] = secret
    return commitment(ti_id, secret)


def set_committer(committer: Callable[[str], None]) -> None:
    """Register how to publish a commitment when no operator did (the SDK's message)."""
    global _committer
    _committer = committer


def take_secret(ti_id: str) -> str:
    """The secret whose commitment this try published; commits now when none is pending.

    Each secret is handed out once: the issuer accepts it once.
    """
    with _lock:
        secret = _secrets.pop(ti_id, None)
    if secret is not None:
        return secret
    if _committer is None:
        raise IdentityError(
            "this process cannot commit to a step secret (no Airflow task runtime)",
            "run the step inside an Airflow task, or use identity trusted_workers",
        )
    _committer(prepare(ti_id))
    with _lock:
        secret = _secrets.pop(ti_id, None)
    if secret is None:  # pragma: no cover - prepare() stored it under the lock
        raise IdentityError("the step secret vanished", "retry the task")
    return secret
