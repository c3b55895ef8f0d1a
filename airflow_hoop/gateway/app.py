"""The FastAPI application: wiring, lifespan and hoop-shaped error bodies."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_hoop.errors import (
    BadRequestError,
    GatewayAuthError,
    GatewayUnavailableError,
    HoopError,
    LedgerError,
    PolicyRefusedError,
    StepElsewhereError,
    VaultError,
)
from airflow_hoop.gateway.access.auth import Authenticator
from airflow_hoop.gateway.approvals.notifier import ReviewNotifier
from airflow_hoop.gateway.approvals.service import ReviewService
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.gateway.execution.runners.postgres import TargetUnavailableError
from airflow_hoop.gateway.execution.runners.sandbox import shell_unavailable
from airflow_hoop.gateway.execution.sessions import SessionService
from airflow_hoop.gateway.execution.step_end_bus import StepEndBus
from airflow_hoop.gateway.execution.steps import StepRegistry
from airflow_hoop.gateway.ledger_io.checkpoints import CheckpointSigner
from airflow_hoop.gateway.ledger_io.process_key import ProcessKeys
from airflow_hoop.gateway.ledger_io.recovery import GatewayRecovery
from airflow_hoop.gateway.ledger_io.siem import SiemStream
from airflow_hoop.gateway.observability.metrics import GatewayMetrics, RequestMetrics
from airflow_hoop.gateway.routes.audit import router as audit_router
from airflow_hoop.gateway.routes.deps import Services
from airflow_hoop.gateway.routes.health import router as health_router
from airflow_hoop.gateway.routes.input_guard import NulGuard
from airflow_hoop.gateway.routes.ledger import router as ledger_router
from airflow_hoop.gateway.routes.reviews import router as reviews_router
from airflow_hoop.gateway.routes.sessions import router
from airflow_hoop.gateway.routes.stream import router as stream_router
from airflow_hoop.gateway.settings import GatewaySettings, ShellConnection
from airflow_hoop.gateway.settings_reload import (
    SettingsReloader,
    reload_on_sighup,
    settings_path,
)
from airflow_hoop.gateway.vault import GatewayVaultClient

log = logging.getLogger(__name__)

#: On a 409: the gateway process that holds the step (its instance id: host-pid-random).
OWNER_HEADER = "X-Hoop-Step-Owner"

#: HTTP status of each typed error; unlisted HoopErrors are 500.
_STATUS: list[tuple[type[HoopError], int]] = [
    (GatewayAuthError, 401),
    (StepElsewhereError, 409),
    (PolicyRefusedError, 403),
    (BadRequestError, 400),
    (VaultError, 503),
    (LedgerError, 503),
    (TargetUnavailableError, 503),
    (GatewayUnavailableError, 503),
]


def create_app(settings: GatewaySettings, settings_file: str | None = None) -> FastAPI:
    """The gateway app; the lifespan opens the database pool and Vault client.

    ``settings_file`` (default ``$HOOP_GATEWAY_CONFIG``): what SIGHUP reloads
    (``settings_reload.py``).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        http = httpx.AsyncClient(trust_env=False, timeout=settings.vault_timeout_seconds)
        store = GatewayStore(
            settings.database_dsn.get_secret_value(),
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
        )
        vault = GatewayVaultClient(settings.vault, timeout=settings.vault_timeout_seconds)
        try:
            await store.open()
            await vault.login()
            # Before anything is appended: every batch is signed by a certified key.
            ledger_keys = ProcessKeys(settings.checkpoints, store, vault)
            await ledger_keys.start()
            for conn in settings.connections:  # a shell connection that cannot run here
                why = shell_unavailable(conn) if isinstance(conn, ShellConnection) else None
                if why is not None:
                    log.warning("shell connection %s will be refused: %s", conn.name, why)
            registry = StepRegistry(settings, store, vault)
            sessions = SessionService(settings, store, registry)
            auth = Authenticator(settings, http)
            step_ends = StepEndBus(settings.database_dsn.get_secret_value(), registry)
            await step_ends.start()
            # Approval notifications (docs/notifications.md): none without a webhook.
            notifier = ReviewNotifier.create(settings.notifications, store)
            app.state.services = Services(
                settings,
                store,
                auth,
                registry,
                sessions,
                http,
                reviews=ReviewService(settings, store, notifier),
                step_ends=step_ends,
            )
            app.state.checkpoints = CheckpointSigner(settings.checkpoints, store, vault)
            registry.start_reaper()
            app.state.checkpoints.start()
            # Heartbeat, and the sweep of sessions and leases a dead gateway left open.
            recovery = GatewayRecovery(
                settings.recovery, store, vault, is_running=sessions.is_running
            )
            await recovery.start()
            # The ledger to a SIEM (off unless siem_stream.enabled), from its durable cursor.
            siem = SiemStream(settings.siem_stream, store, app.state.checkpoints.public_keys)
            siem.start()
            if notifier is not None:
                notifier.start()
            reloader = SettingsReloader(settings, store, settings_path(settings_file))
            app.state.reloader = reloader
            try:
                with reload_on_sighup(reloader):
                    yield
            finally:
                if notifier is not None:
                    await notifier.stop()
                await siem.stop()
                await recovery.stop()
                await step_ends.stop()
                await registry.stop_reaper()
                await sessions.shutdown()
                await registry.release_all("shutdown")
                await recovery.mark_stopped()
                # Last: sign what the shutdown itself recorded.
                await app.state.checkpoints.stop()
                await ledger_keys.stop()
        finally:
            await store.close()
            vault.close()
            await http.aclose()

    app = FastAPI(
        title="airflow-hoop gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapiv3.json",
    )
    app.include_router(health_router)
    app.include_router(router)
    app.include_router(ledger_router)
    app.include_router(audit_router)
    app.include_router(reviews_router)
    app.include_router(stream_router)
    _install_error_handlers(app)
    app.add_middleware(NulGuard)  # NUL in a URL is bad input, not a database failure
    # Outermost: counts every answer, a NulGuard refusal included.
    app.state.metrics = GatewayMetrics()
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            {"message": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # loc and msg only: never echo the input back.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in list(exc.errors())[:5]
        )
        message = str(BadRequestError(f"invalid request ({problems})", "correct the named fields"))
        return JSONResponse({"message": message}, status_code=422)

    async def hoop_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HoopError)
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
        if status >= 500:
            log.warning("%s", exc)
        headers = None
        if isinstance(exc, StepElsewhereError):
            # The owner by name; and a new connection for the retry, so that another worker
            # process of a multi-worker gateway may accept it (docs/deploy.md).
            headers = {OWNER_HEADER: exc.owner, "Connection": "close"}
        return JSONResponse({"message": str(exc)}, status_code=status, headers=headers)

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse(
            {"message": "[gateway] internal error. Fix: see the gateway log"}, status_code=500
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HoopError, hoop_error)
    app.add_exception_handler(Exception, unexpected)
