"""Read-only auditor routes under ``/api/airflow-hoop/ledger``: the filtered page of records,
checkpoints, the public key, time windows and the raw record stream. There is no route that
changes a record.

All need an API key (auditor or admin); a step's identity token gets 403.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from airflow_hoop.errors import BadRequestError, PolicyRefusedError
from airflow_hoop.gateway.access.auth import ApiKeyPrincipal, Principal
from airflow_hoop.gateway.db.ledger_reads import (
    LedgerFilter,
    checkpoint_page,
    hash_at,
    key_certificates,
    ledger_page,
    stream_lines,
    window_bounds,
)
from airflow_hoop.gateway.ledger_io.checkpoints import CheckpointSigner
from airflow_hoop.gateway.routes.deps import Caller, Svc
from airflow_hoop.ledger.checkpoint import PublicKeySet
from airflow_hoop.ledger.manifest_sig import (
    ManifestSignRequest,
    ManifestStatement,
    SignedManifest,
    sign_manifest,
)
from airflow_hoop.wire.ledger import CheckpointPage, KeyCertificates, LedgerPage, LedgerWindow

router = APIRouter(prefix="/api/airflow-hoop/ledger")

_MAX_CHECKPOINT_PAGE = 1000
_MAX_LEDGER_PAGE = 1000


def require_ledger_reader(caller: Principal) -> None:
    """The ledger is read with API keys (auditor, admin), never by steps: 403 otherwise."""
    if not isinstance(caller, ApiKeyPrincipal):
        raise HTTPException(
            403,
            detail=str(
                PolicyRefusedError(
                    "steps may not read the ledger", "read it with an auditor or admin API key"
                )
            ),
        )


@router.get("")
async def ledger(
    svc: Svc,
    caller: Caller,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=_MAX_LEDGER_PAGE)] = _MAX_LEDGER_PAGE,
    since: datetime | None = None,
    until: datetime | None = None,
    dag_id: str | None = None,
    task_id: str | None = None,
    run_id: str | None = None,
    connection: str | None = None,
) -> LedgerPage:
    """Read-only page of records in sequence order (API keys only).

    Filters (all optional, combined): ``since <= time < until``, dag, task, run, connection.
    ``next_after_seq`` continues the same filtered read.
    """
    require_ledger_reader(caller)
    where = LedgerFilter(
        since=since,
        until=until,
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        connection=connection,
    )
    records = await ledger_page(svc.store, after_seq, limit, where)
    full = len(records) == limit
    return LedgerPage(records=records, next_after_seq=records[-1].seq if full else None)


async def auditor(caller: Caller) -> Principal:
    require_ledger_reader(caller)
    return caller


Auditor = Annotated[Principal, Depends(auditor)]


def signer(request: Request) -> CheckpointSigner:
    found: CheckpointSigner = request.app.state.checkpoints
    return found


Signer = Annotated[CheckpointSigner, Depends(signer)]


@router.get("/checkpoints")
async def checkpoints(
    svc: Svc,
    _: Auditor,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    before_seq: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=_MAX_CHECKPOINT_PAGE)] = 100,
    newest_first: bool = False,
) -> CheckpointPage:
    """Checkpoint records with ``after_seq < seq < before_seq``, oldest (or newest) first."""
    records = await checkpoint_page(svc.store, after_seq, before_seq, limit, newest_first)
    full = len(records) == limit and not newest_first
    return CheckpointPage(checkpoints=records, next_after_seq=records[-1].seq if full else None)


@router.get("/keys")
async def keys(svc: Svc, _: Auditor) -> KeyCertificates:
    """The gateway processes' batch key certificates (``gateway.key`` records, signed by
    Vault's checkpoint key): what a verifier of a window needs for keys certified before it."""
    return KeyCertificates(certificates=await key_certificates(svc.store))


@router.post("/manifest-signature")
async def manifest_signature(
    svc: Svc, caller: Auditor, request: ManifestSignRequest
) -> SignedManifest:
    """Sign an export bundle's manifest with this process's certified key, if the records it
    describes end on this ledger's hash at ``last_seq`` (``ledger/manifest_sig.py``)."""
    stored = await hash_at(svc.store, request.last_seq)
    if stored is None or stored != request.end_hash:
        raise HTTPException(
            400,
            detail=str(
                BadRequestError(
                    f"the ledger's hash at seq {request.last_seq} is not the bundle's",
                    "export the bundle again from this gateway's ledger",
                )
            ),
        )
    key = svc.store.signer.current
    if key is None:
        raise HTTPException(503, detail="this gateway process has no certified key yet")
    assert isinstance(caller, ApiKeyPrincipal)  # the Auditor dependency guarantees it
    statement = ManifestStatement(
        manifest_sha256=request.manifest_sha256,
        last_seq=request.last_seq,
        end_hash=request.end_hash,
        key_id=key.key_id,
        signed_at=datetime.now(timezone.utc),
        signed_for=caller.key_name,
    )
    return sign_manifest(key.private, statement)


@router.get("/public-key")
async def public_key(_: Auditor, sign: Signer) -> PublicKeySet:
    """The checkpoint key's public halves, read from Vault's transit engine now.

    A reviewer who does not trust the gateway reads the same key from Vault directly
    (``GET /v1/<transit>/keys/<key>``) and pins it with ``audit verify --public-key``.
    """
    return await sign.public_keys()


@router.get("/window")
async def window(svc: Svc, _: Auditor, since: datetime, until: datetime) -> LedgerWindow:
    """First and last sequence of the records with ``since <= time < until``."""
    if since.tzinfo is None or until.tzinfo is None:
        raise HTTPException(
            400,
            detail=str(
                BadRequestError(
                    "since and until need a time zone", "send ISO 8601 times with Z or +00:00"
                )
            ),
        )
    bounds = await window_bounds(svc.store, since, until)
    return LedgerWindow(since=since, until=until, **bounds.model_dump())


@router.get("/stream")
async def stream(
    svc: Svc,
    _: Auditor,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    through_seq: Annotated[int | None, Query(ge=0)] = None,
) -> StreamingResponse:
    """Every record in ``after_seq < seq <= through_seq`` as NDJSON, with its stored bytes:
    ``{"seq":N,"hash":"…","record":{…}}``, then ``{"end":true,"last_seq":N,"records":K}``."""
    return StreamingResponse(
        stream_lines(svc.store, after_seq, through_seq), media_type="application/x-ndjson"
    )
