"""The Airflow UI plugin's gateway client: reads reviews and passes people's decisions on.

It holds the plugin's own ``hpk_`` key (role ``approver``, ``asserts_users``): the gateway
records the Airflow user it names *and* this credential, with channel ``airflow-ui``. The key
must live only where the API server runs, never where tasks run (see docs/approvals.md).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import httpx

from airflow_hoop.client.http import GatewayClient
from airflow_hoop.wire.reviews import (
    DecisionExtension,
    Review,
    ReviewDecisionRequest,
)


class AsyncApproverClient:
    """Async, for the API server's event loop; one short-lived client per request.

    Requests go through :class:`~airflow_hoop.client.http.GatewayClient` (bearer, retries of
    reads, typed errors), each in a worker thread so the event loop never blocks.
    """

    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = 15.0, ca_file: str | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._gateway = GatewayClient(
            self.base_url,
            token=lambda: api_key,
            timeout=timeout,
            user_client="airflow-hoop-ui",
            ca_file=ca_file,
            unreachable_fix="start the gateway or correct [hoop] gateway_url of the API server",
        )

    async def __aenter__(self) -> AsyncApproverClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._gateway.close()

    async def list_reviews(self, **filters: Any) -> list[Review]:
        params = {k: v for k, v in filters.items() if v is not None}
        response = await self._send("GET", "/api/reviews", params=params, retry=True)
        return [Review.model_validate(r) for r in response.json()]

    async def get_review(self, review_id: str) -> Review:
        return await anyio.to_thread.run_sync(self._gateway.get_review, review_id)

    async def decide(
        self,
        review_id: str,
        decision: str,
        *,
        user: str,
        reason: str | None,
        command_sha256: str | None,
        break_glass: bool = False,
    ) -> Review:
        body = ReviewDecisionRequest(
            status=decision,  # type: ignore[arg-type]
            force_review=break_glass,
            rejection_reason=reason if decision != "APPROVED" else None,
            airflow_hoop=DecisionExtension(
                reason=reason, reviewed_by=user, command_sha256=command_sha256
            ),
        )
        # Not retried: a decision is recorded once; a second PUT would be a second decision.
        response = await self._send(
            "PUT", f"/api/reviews/{review_id}", json=body.model_dump(mode="json", exclude_none=True)
        )
        return Review.model_validate(response.json())

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await anyio.to_thread.run_sync(partial(self._gateway.send, method, path, **kwargs))
