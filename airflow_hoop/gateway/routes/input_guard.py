"""Refuse NUL characters in a request's path or query before any route sees them.

PostgreSQL text cannot hold NUL: a ``%00`` in a filter (``/api/reviews?run_id=%00``) reached the
gateway database and came back as a 503 "[ledger] ... refused", blaming the database for bad
input (found by tests/integration/test_fuzz_api.py). No identifier the gateway knows contains NUL, so one
check here answers 400 for every route, present and future. (Exec bodies are checked for NUL
where they are parsed, in ``pipeline.py``.)
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from airflow_hoop.errors import BadRequestError

_MESSAGE = json.dumps(
    {
        "message": str(
            BadRequestError(
                "the request's path or query contains a NUL character (%00)",
                "remove NUL from the URL; no name or id the gateway knows contains it",
            )
        )
    }
).encode()


class NulGuard:
    """ASGI middleware: 400 for a NUL in the path or query string."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _has_nul(scope):
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_MESSAGE)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _MESSAGE})
            return
        await self.app(scope, receive, send)


def _has_nul(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    raw_path: bytes = scope.get("raw_path") or b""
    query: bytes = scope.get("query_string") or b""
    return "\x00" in path or b"%00" in raw_path or b"\x00" in query or b"%00" in query
