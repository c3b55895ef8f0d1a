"""``GET /api/sessions/{id}/result/stream``: a session's output as plain text, also while it runs.

hoop answers this route with the session's whole output. We add three query parameters:
``offset`` (characters already read), ``limit`` (at most this many characters) and ``wait``
(seconds to wait for new output, a long poll), and say where the text stands in headers:
``X-Airflow-Hoop-Status`` (``running``, or ``done`` once the answer reaches the end of a
finished session's output) and ``X-Airflow-Hoop-Next-Offset``. A client that sees no such
header talks to hoop.dev and polls ``GET /api/sessions/{id}`` instead.

A running command's output lives in the memory of the gateway process that runs it; another
process answers with what the database holds (nothing until the session is done).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from airflow_hoop.gateway.routes.deps import Caller, Svc, owned_session

router = APIRouter(prefix="/api")

STATUS_HEADER = "X-Airflow-Hoop-Status"
NEXT_OFFSET_HEADER = "X-Airflow-Hoop-Next-Offset"
_MAX_WAIT_SECONDS = 30.0
_MAX_LIMIT = 16 * 1024 * 1024


@router.get("/sessions/{session_id}/result/stream", response_class=PlainTextResponse)
async def result_stream(
    session_id: str,
    svc: Svc,
    caller: Caller,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=_MAX_LIMIT)] = None,
    wait: Annotated[float, Query(ge=0, le=_MAX_WAIT_SECONDS)] = 0.0,
) -> PlainTextResponse:
    """The output from ``offset`` on; with ``wait``, returns early when new output arrives."""
    row = await owned_session(svc, caller, session_id)
    running = svc.sessions.running(row.id)
    if row.status == "open" and running is not None:
        live = running.live
        if live is not None:
            await live.wait_beyond(offset, wait)
            if not live.finished:
                return _answer(live.text_since(offset, limit), offset, "running")
        # Done or about to be (its result is being recorded), or SQL: wait for the row.
        await svc.sessions.wait(running, wait)
        row = await svc.store.get_session(row.id) or row
    elif row.status == "open" and wait:
        await asyncio.sleep(min(wait, 1.0))  # runs in another gateway process: poll gently
    if row.status != "done":
        return _answer("", offset, "running")
    output = row.output or ""
    text = output[offset:] if limit is None else output[offset : offset + limit]
    complete = offset + len(text) >= len(output)
    return _answer(text, offset, "done" if complete else "running")


def _answer(text: str, offset: int, status: str) -> PlainTextResponse:
    return PlainTextResponse(
        text,
        headers={STATUS_HEADER: status, NEXT_OFFSET_HEADER: str(offset + len(text))},
    )
