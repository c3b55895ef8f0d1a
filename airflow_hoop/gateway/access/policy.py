"""Who may reach what. Deny by default: a connection names the DAGs that may use it.

The policy only decides; every refusal is recorded in the ledger (``record_refusal``) before
the API answers 403.
"""

from __future__ import annotations

import logging
from fnmatch import fnmatchcase

from pydantic import BaseModel

from airflow_hoop.errors import LedgerError, PolicyRefusedError
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.gateway.settings import PostgresConnection, ShellConnection
from airflow_hoop.ledger.canonical import sha256_hex
from airflow_hoop.ledger.records import PolicyRefused, StepRef

log = logging.getLogger(__name__)

#: Request metadata keys that must agree with the identity token, when present.
_STEP_METADATA = ("dag_id", "task_id", "run_id", "try_number", "map_index")


class Refusal(BaseModel):
    """Why a request was refused: ``reason`` goes to the ledger, ``message`` to the caller."""

    reason: str
    message: str


def check_exec(
    step: StepRef, connection: PostgresConnection | ShellConnection, metadata: dict[str, str]
) -> Refusal | None:
    """None when ``step`` may run a command on ``connection``; otherwise why not."""
    # The token decides who the caller is; metadata that claims another step is a token
    # used for a step it was not issued to (or a confused client): refuse either way.
    token_values = {
        "dag_id": step.dag_id,
        "task_id": step.task_id,
        "run_id": step.run_id,
        "try_number": str(step.try_number),
        "map_index": str(step.map_index),
    }
    for key in _STEP_METADATA:
        claimed = metadata.get(key)
        if claimed is not None and claimed != token_values[key]:
            reason = f"request metadata {key} does not match the identity token's {key}"
            return Refusal(
                reason=reason,
                message=str(
                    PolicyRefusedError(
                        f"{reason} (token is for step {step.key})",
                        "send the identity token of the step that runs the command",
                    )
                ),
            )
    if not any(fnmatchcase(step.dag_id, pattern) for pattern in connection.allowed_dags):
        reason = f"DAG {step.dag_id} is not allowed on connection {connection.name}"
        return Refusal(
            reason=reason,
            message=str(
                PolicyRefusedError(
                    reason,
                    f"add a pattern matching {step.dag_id!r} to allowed_dags of connection "
                    f"{connection.name!r} in the gateway settings",
                )
            ),
        )
    return None


def api_key_exec_refusal(key_name: str, role: str) -> Refusal:
    """API keys read the record; only a step's identity may run commands."""
    reason = f"API key {key_name} ({role}) may not run commands"
    return Refusal(
        reason=reason,
        message=str(
            PolicyRefusedError(
                reason, "run commands from an Airflow step with its Vault identity token"
            )
        ),
    )


async def record_refusal(
    store: GatewayStore,
    step: StepRef | None,
    actor: str,
    connection: str,
    reason: str,
    script: str | None,
) -> None:
    """Append a ``policy.refused`` record (the script by its digest only)."""
    body = PolicyRefused(
        connection=connection,
        reason=reason,
        script_sha256=None if script is None else sha256_hex(script),
    )
    try:
        await store.append(step, actor, body)
    except LedgerError as exc:
        # The refusal stands (fail closed); only its record is missing.
        log.error("policy refusal not recorded: %s", exc)
