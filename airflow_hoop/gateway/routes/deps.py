"""What every route depends on: the services the app's lifespan builds, and the caller.

``Svc`` and ``Caller`` are FastAPI dependencies (``Annotated`` types a route takes as
parameters); ``owned_session`` is the session a caller may see.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import httpx
from fastapi import Depends, Header, HTTPException, Request

from airflow_hoop.errors import GatewayAuthError, VaultTokenGoneError
from airflow_hoop.gateway.access.auth import Authenticator, Principal, StepPrincipal
from airflow_hoop.gateway.access.ended_steps import EndedStepGuard
from airflow_hoop.gateway.access.token_liveness import VaultTokenLiveness
from airflow_hoop.gateway.approvals.gate import ApprovalGate
from airflow_hoop.gateway.approvals.service import ReviewService
from airflow_hoop.gateway.db.step_claims import record_step_refusal
from airflow_hoop.gateway.db.store import GatewayStore, SessionRow
from airflow_hoop.gateway.execution.sessions import SessionService
from airflow_hoop.gateway.execution.step_end_bus import StepEndBus
from airflow_hoop.gateway.execution.steps import StepRegistry
from airflow_hoop.gateway.pipeline import ExecPipeline
from airflow_hoop.gateway.settings import GatewaySettings
from airflow_hoop.wire.sessions import VAULT_ACCESSOR_HEADER


class Services:
    """What the routes need; built by the app's lifespan."""

    def __init__(
        self,
        settings: GatewaySettings,
        store: GatewayStore,
        auth: Authenticator,
        registry: StepRegistry,
        sessions: SessionService,
        http: httpx.AsyncClient,
        reviews: ReviewService | None = None,
        step_ends: StepEndBus | None = None,
    ) -> None:
        #: Tells the other gateway processes when a step ends (see step_end_bus.py).
        self.step_ends = step_ends
        self.settings = settings
        self.store = store
        self.auth = auth
        self.registry = registry
        self.sessions = sessions
        self.http = http
        self.reviews = reviews or ReviewService(settings, store)
        self.gate = ApprovalGate(store)
        self.pipeline = ExecPipeline(settings, store, self.gate, sessions)
        #: Refuses every request of an ended step (access/ended_steps.py).
        self.ended_steps = EndedStepGuard(registry)
        #: Refuses a step's requests once its own Vault token is gone (token_liveness.py).
        self.liveness = VaultTokenLiveness(registry.vault, settings.vault.token_recheck_seconds)


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop on
    # every request (measured ~0.3 ms, more on a busy machine) for a dictionary lookup.
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]


async def ending_principal(
    svc: Svc, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """The caller of ``steps/end``: its step's token must be valid and the step not ended, but
    its Vault token may be gone (the task revokes it side by side with the end); an end only
    takes away."""
    caller = await svc.auth.authenticate(authorization)
    if isinstance(caller, StepPrincipal):
        await svc.ended_steps.check(caller.step, caller.issued_at)  # dies with the step
    return caller


async def principal(
    svc: Svc,
    authorization: Annotated[str | None, Header()] = None,
    vault_accessor: Annotated[str | None, Header(alias=VAULT_ACCESSOR_HEADER)] = None,
) -> Principal:
    caller = await ending_principal(svc, authorization)
    if isinstance(caller, StepPrincipal):
        try:  # ... and with the step's own Vault token (access/token_liveness.py)
            await svc.liveness.check(caller.step, caller.entity_id, vault_accessor)
        except GatewayAuthError as exc:
            await record_step_refusal(svc.store, caller.step, "-", exc.what)
            if isinstance(exc, VaultTokenGoneError):
                # Its database users go too, here and now, not at the idle reaper.
                await svc.registry.release_step(caller.step, "token-revoked")
            raise
    return caller


Caller = Annotated[Principal, Depends(principal)]
EndingCaller = Annotated[Principal, Depends(ending_principal)]


async def owned_session(svc: Services, caller: Principal, session_id: str) -> SessionRow:
    """The session, if the caller may see it: 404 when unknown, 403 for another step's."""
    try:
        sid = uuid.UUID(session_id)
    except ValueError:
        raise HTTPException(404, detail="not found") from None
    row = await svc.store.get_session(sid)
    if row is None:
        raise HTTPException(404, detail="not found")
    if isinstance(caller, StepPrincipal) and row.step_key != caller.step.key:
        raise HTTPException(403, detail="user is not allowed to access this session")
    return row
