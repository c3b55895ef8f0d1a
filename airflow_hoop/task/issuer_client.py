"""Ask the identity issuer for the step's JWT: present the secret once, get signed claims."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from airflow_hoop.client.tls import untrusted_certificate, verifying_context
from airflow_hoop.errors import IdentityError, IssuerError
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.task import attestation
from airflow_hoop.task.vault_config import StepVaultConfig
from airflow_hoop.wire.identity import IssuerRefusal, StepTokenRequest, StepTokenResponse


def issuer_jwt(config: StepVaultConfig, step: StepRef) -> str:
    """The issuer's JWT for this step (claims from Airflow's metadata database)."""
    if not config.issuer_url:
        raise IssuerError(
            "identity airflow_issuer needs issuer_url in the 'hoop' connection's extras",
            "set issuer_url to <api-server>/hoop/issuer (or the standalone issuer's URL)",
        )
    if not step.ti_id:
        raise IdentityError(
            "the task context has no task-instance id, so the issuer cannot check the step",
            "run the step inside an Airflow 3 task",
        )
    body = StepTokenRequest(
        dag_id=step.dag_id,
        run_id=step.run_id,
        task_id=step.task_id,
        map_index=step.map_index,
        secret=attestation.take_secret(step.ti_id),
        audience=config.jwt_audience,
    )
    url = config.issuer_url.rstrip("/") + "/token"
    try:
        # The issuer runs on the API server: its certificate may be the private CA's too.
        verify = verifying_context(config.ca_file)
        with httpx.Client(timeout=config.timeout_seconds, trust_env=False, verify=verify) as client:
            response = client.post(
                url, content=body.model_dump_json(), headers={"Content-Type": "application/json"}
            )
    except httpx.HTTPError as exc:
        untrusted = untrusted_certificate(exc)
        if untrusted is not None:
            raise IssuerError(
                f"the identity issuer's TLS certificate at {config.issuer_url} is not trusted",
                untrusted.fix,
            ) from None
        raise IssuerError(
            f"cannot reach the identity issuer at {config.issuer_url} ({type(exc).__name__})",
            "start the issuer (the API server's plugin, or the standalone issuer) or correct "
            "issuer_url",
        ) from None
    if response.status_code != 200:
        try:
            refusal = IssuerRefusal.model_validate_json(response.content)
        except ValidationError:
            raise IssuerError(
                f"the identity issuer answered {response.status_code}",
                "check the issuer's log",
            ) from None
        raise IssuerError(f"the identity issuer refused: {refusal.reason}", refusal.fix)
    return StepTokenResponse.model_validate_json(response.content).token
