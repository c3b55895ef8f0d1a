"""The Airflow UI plugin's gateway client: reads reviews and passes people's decisions on.

It holds the plugin's own ``hpk_`` key (role ``approver``, ``asserts_users``): the gateway
records the Airflow user it names *and* this credential, with channel ``airflow-ui``. The key
must live only where the API server runs, never where tasks run (see docs/approvals.md).
"""

from __future__ import annotations

from typing import Any

import httpx

from airflow_hoop.client.errors import error_for
from airflow_hoop.client.reviews import (
    DecisionExtension,
    Review,
    ReviewDecisionRequest,
)
from airflow_hoop.errors import GatewayUnavailableError


class AsyncApproverClient:
    """Async, for the API server's event loop; one short-lived client per request."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            trust_env=False,
            headers={"Authorization": f"Bearer {api_key}", "User-Client": "airflow-hoop-ui"},
        )

    async def __aenter__(self) -> AsyncApproverClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def list_reviews(self, **filters: Any) -> list[Review]:
        params = {k: v for k, v in filters.items() if v is not None}
        response = await self._send("GET", "/api/reviews", params=params)
        return [Review.model_validate(r) for r in response.json()]

    async def get_review(self, review_id: str) -> Review:
        return Review.model_validate((await self._send("GET", f"/api/reviews/{review_id}")).json())

    async def decide(
        self,
        review_id: str,
        decision: str,
        *,
        user: str,
        reason: str | None,
        command_sha256: str | None,
    ) -> Review:
        body = ReviewDecisionRequest(
            status=decision,  # type: ignore[arg-type]
            rejection_reason=reason if decision != "APPROVED" else None,
            airflow_hoop=DecisionExtension(
                reason=reason, reviewed_by=user, command_sha256=command_sha256
            ),
        )
        response = await self._send(
            "PUT", f"/api/reviews/{review_id}", json=body.model_dump(mode="json", exclude_none=True)
        )
        return Review.model_validate(response.json())

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnavailableError(
                f"cannot reach the gateway at {self.base_url} ({type(exc).__name__})",
                "start the gateway or correct [hoop] gateway_url of the API server",
            ) from None
        if response.status_code >= 400:
            raise error_for(response)
        return response
