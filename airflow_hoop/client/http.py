"""GatewayClient: the one way Airflow-side code talks to a gateway (ours or hoop.dev).

Handles hoop's quirks: a run longer than the gateway's sync window answers 202 ``running``
and is polled; ``has_review`` on a 200 means nothing ran yet; ``exit_code`` -2 means the
gateway could not obtain one. Only idempotent calls are retried; ``POST /api/sessions`` is
retried only when the connection could not be opened (nothing was sent).
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from airflow_hoop.client.errors import error_for
from airflow_hoop.client.tls import untrusted_certificate, verifying_context
from airflow_hoop.errors import GatewayUnavailableError, PolicyRefusedError
from airflow_hoop.ledger.chain import StoredRecord
from airflow_hoop.wire.ledger import LedgerPage
from airflow_hoop.wire.reviews import Review, ReviewCreate, ReviewCreated
from airflow_hoop.wire.sessions import (
    VAULT_ACCESSOR_HEADER,
    ExecRequest,
    ExecResponse,
    OutputChunk,
    RevokeMode,
    SessionInfo,
    SessionList,
    StepEndResponse,
)

M = TypeVar("M", bound=BaseModel)
TokenProvider = Callable[[], str]

_IDEMPOTENT_RETRIES = 3
#: Names the step of every request, for the load balancer's rule (docs/deploy.md). Not secret.
STEP_HEADER = "X-Hoop-Step"
#: A 409 with this header: another gateway process holds the step and nothing ran. The gateway
#: closed the connection, so a retry may be accepted by the owner (workers on one socket).
_OWNER_HEADER = "X-Hoop-Step-Owner"
_OWNER_RETRIES = 12
# Headers of our gateway's result/stream (gateway/routes/stream.py); hoop.dev sends neither.
_STREAM_STATUS = "X-Airflow-Hoop-Status"
_STREAM_NEXT_OFFSET = "X-Airflow-Hoop-Next-Offset"


class GatewayClient:
    """A small typed client. ``token`` is a callable so identity tokens refresh transparently.

    ``ca_file``: the PEM file of a private CA that signs the gateway's certificate (default:
    ``$HOOP_CA_FILE``, else the public CAs; see ``client/tls.py``).
    """

    def __init__(
        self,
        base_url: str,
        token: TokenProvider,
        *,
        timeout: float = 75.0,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
        user_client: str = "airflow-hoop",
        unreachable_fix: str = "start the gateway or correct the 'hoop' connection's host",
        step_key: str | None = None,
        vault_accessor: Callable[[], str | None] | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        # The step's Vault token by its accessor (after the token: that logs in first).
        self._accessor = vault_accessor
        # What to do when the gateway cannot be reached: the caller knows where its URL is set.
        self._unreachable_fix = unreachable_fix
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        # retries= on the transport only retries failed connects: safe even for POST.
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=httpx.HTTPTransport(retries=2, verify=verifying_context(ca_file)),
            headers={"User-Client": user_client, **_step_header(step_key)},
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hoop's session API ------------------------------------------------------------------
    def exec(
        self,
        request: ExecRequest,
        *,
        wait: bool = True,
        on_poll: Callable[[SessionInfo], None] | None = None,
        deadline_s: float | None = None,
    ) -> ExecResponse:
        """``POST /api/sessions``; when the gateway answers 202, poll until the session is done."""
        response = self._send("POST", "/api/sessions", json=request.model_dump(exclude_none=True))
        return self._exec_answer(response, wait, on_poll, deadline_s)

    def _exec_answer(
        self,
        response: httpx.Response,
        wait: bool,
        on_poll: Callable[[SessionInfo], None] | None,
        deadline_s: float | None,
    ) -> ExecResponse:
        """An exec's answer: as is, or (202 and ``wait``) polled until the session is done."""
        result = ExecResponse.model_validate_json(response.content)  # fast on large output
        if response.status_code != 202 or result.has_review or not wait:
            return result
        return self.wait_for(result.session_id, on_poll=on_poll, deadline_s=deadline_s)

    def wait_for(
        self,
        session_id: str,
        *,
        on_poll: Callable[[SessionInfo], None] | None = None,
        deadline_s: float | None = None,
    ) -> ExecResponse:
        """Poll ``GET /api/sessions/{id}`` until ``status == done``; answer as ExecResponse."""
        interval = self.poll_interval
        deadline = None if deadline_s is None else time.monotonic() + deadline_s
        while True:
            info = self.get_session(session_id)
            if on_poll is not None:
                on_poll(info)
            if info.status == "done":
                result = _as_exec_response(info)
                if info.output is None:
                    # hoop.dev's Session has no output field: the text is at /result/stream.
                    result.output = self.read_output(session_id).text
                return result
            if deadline is not None and time.monotonic() > deadline:
                raise GatewayUnavailableError(
                    f"session {session_id} still running after {deadline_s:.0f}s",
                    "raise the task's timeout or kill the session",
                )
            time.sleep(interval)
            interval = min(interval * 1.5, self.max_poll_interval)

    def get_session(self, session_id: str) -> SessionInfo:
        return self._get(f"/api/sessions/{session_id}", SessionInfo)

    def read_output(
        self, session_id: str, offset: int = 0, *, wait: float = 0.0, limit: int | None = None
    ) -> OutputChunk:
        """``GET /api/sessions/{id}/result/stream``: the session's output from ``offset`` on.

        Our gateway honours ``offset``/``limit``/``wait`` and says in headers where the text
        stands. hoop.dev answers the whole output each time, without those headers: the text
        is then cut at ``offset`` here and ``done`` is None (``GET /api/sessions/{id}`` says).
        """
        params: dict[str, Any] = {"offset": offset}
        if wait:
            params["wait"] = wait
        if limit is not None:
            params["limit"] = limit
        response = self._send(
            "GET", f"/api/sessions/{session_id}/result/stream", params=params, retry=True
        )
        text = response.content.decode("utf-8", "replace")
        status = response.headers.get(_STREAM_STATUS)
        if status is None:
            text = text[offset:]
            return OutputChunk(text=text, offset=offset, next_offset=offset + len(text))
        next_offset = int(response.headers.get(_STREAM_NEXT_OFFSET, offset + len(text)))
        return OutputChunk(text=text, offset=offset, next_offset=next_offset, done=status == "done")

    def request_review(self, request: ReviewCreate) -> ReviewCreated:
        """``POST /api/airflow-hoop/reviews``: ask for an approval (idempotent while open)."""
        # Retried: the gateway answers the open review of the same step and command again.
        response = self._send(
            "POST", "/api/airflow-hoop/reviews", json=request.model_dump(mode="json"), retry=True
        )
        return ReviewCreated.model_validate(response.json())

    def get_review(self, review_id: str) -> Review:
        """``GET /api/reviews/{id}``: a review by its id or by its session's id."""
        return self._get(f"/api/reviews/{review_id}", Review)

    def exec_approved(
        self,
        session_id: str,
        *,
        wait: bool = True,
        on_poll: Callable[[SessionInfo], None] | None = None,
        deadline_s: float | None = None,
    ) -> ExecResponse:
        """Run a reviewed session: ``POST /api/sessions/{id}/exec``, only once it is APPROVED.

        hoop marks the review EXECUTED after the first call whatever happens (even "waiting
        approval" or "agent is offline"), so there is one attempt: this asks
        ``GET /api/reviews/{id}`` first, refuses unless the review is APPROVED, and never
        retries the POST.
        """
        review = self.get_review(session_id)
        if review.status != "APPROVED":
            reason = f" ({review.rejection_reason})" if review.rejection_reason else ""
            raise PolicyRefusedError(
                f"review {review.id} of session {session_id} is {review.status}{reason}, not "
                "APPROVED: the session is not run (hoop gives an approved session one attempt)",
                "wait until the review is approved, or ask for a new one",
            )
        response = self._send("POST", f"/api/sessions/{session_id}/exec")
        return self._exec_answer(response, wait, on_poll, deadline_s)

    def find_sessions(self, correlation_id: str, limit: int = 100) -> SessionList:
        """``GET /api/sessions?correlation_id=``: earlier attempts of the same step."""
        return self._get(
            "/api/sessions", SessionList, params={"correlation_id": correlation_id, "limit": limit}
        )

    def kill(self, session_id: str) -> None:
        self._send("POST", f"/api/sessions/{session_id}/kill", retry=True)

    def healthz(self) -> bool:
        return self._send("GET", "/api/healthz", retry=True).status_code == 200

    # -- airflow-hoop extensions ---------------------------------------------------------------
    def end_step(self, token: str | None = None, *, revoke: RevokeMode = "wait") -> StepEndResponse:
        """Tell the gateway the step is over: it closes the step's connections and revokes its users.

        ``token`` overrides the token provider (the step may be revoking its Vault login).
        ``revoke="background"``: answered once the connections are closed; the gateway
        finishes the revocations (and their records) right after.
        """
        response = self._send(
            "POST",
            "/api/airflow-hoop/steps/end",
            retry=True,
            token=token,
            params={"revoke": revoke} if revoke != "wait" else None,
        )
        return StepEndResponse.model_validate(response.json())

    def ledger_page(self, after_seq: int = 0, limit: int = 1000) -> LedgerPage:
        return self._get(
            "/api/airflow-hoop/ledger", LedgerPage, params={"after_seq": after_seq, "limit": limit}
        )

    def iter_ledger(self, after_seq: int = 0, page_size: int = 1000) -> Iterator[StoredRecord]:
        """Every ledger record after ``after_seq``, in order, one page in memory at a time."""
        while True:
            page = self.ledger_page(after_seq, page_size)
            yield from page.records
            if page.next_after_seq is None or not page.records:
                return
            after_seq = page.next_after_seq

    # -- plumbing ------------------------------------------------------------------------------
    def send(self, method: str, path: str, *, retry: bool = False, **kwargs: Any) -> httpx.Response:
        """One request with this client's bearer, retries and typed errors (other clients' path).

        ``retry`` only for idempotent calls; a non-2xx answer raises ``error_for``'s error.
        """
        return self._send(method, path, retry=retry, **kwargs)

    @contextlib.contextmanager
    def stream(
        self, method: str, path: str, *, params: dict[str, Any] | None = None
    ) -> Iterator[httpx.Response]:
        """A streamed answer (not read ahead), opened with this client's bearer and errors."""
        try:
            with self._http.stream(
                method, path, params=params, headers=self._auth(self._token())
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_for(response)
                yield response
        except httpx.TransportError as exc:
            raise GatewayUnavailableError(
                f"the answer of {method} {path} from {self.base_url} broke ({type(exc).__name__})",
                self._unreachable_fix,
            ) from None

    def _get(self, path: str, model: type[M], params: dict[str, Any] | None = None) -> M:
        return model.model_validate_json(self._send("GET", path, params=params, retry=True).content)

    def _auth(self, bearer: str) -> dict[str, str]:
        # No token (the connection's "Test" button, health checks): no header. "Bearer " with
        # nothing after it is not a valid header value; h11 refuses to send it.
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        accessor = self._accessor() if self._accessor is not None else None
        if accessor:
            headers[VAULT_ACCESSOR_HEADER] = accessor
        return headers

    def _send(
        self,
        method: str,
        path: str,
        *,
        retry: bool = False,
        token: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        attempts = _IDEMPOTENT_RETRIES if retry else 1
        elsewhere = 0
        attempt = 0
        while attempt < attempts:
            attempt += 1
            try:
                bearer = token or self._token()
                response = self._http.request(method, path, headers=self._auth(bearer), **kwargs)
            except httpx.TransportError as exc:
                untrusted = untrusted_certificate(exc)
                if untrusted is not None:
                    raise untrusted from None  # no retry: trying again cannot help
                if attempt < attempts:
                    time.sleep(0.2 * attempt)
                    continue
                raise GatewayUnavailableError(
                    f"cannot reach the gateway at {self.base_url} ({type(exc).__name__})",
                    self._unreachable_fix,
                ) from None
            if response.status_code >= 500 and retry and attempt < attempts:
                time.sleep(0.2 * attempt)
                continue
            if (
                response.status_code == 409
                and _OWNER_HEADER in response.headers
                and elsewhere < _OWNER_RETRIES
            ):
                # Nothing ran (safe for any method); a new connection may reach the owner.
                elsewhere += 1
                attempt -= 1
                time.sleep(0.02 * elsewhere)
                continue
            if response.status_code >= 400:
                raise error_for(response)
            return response
        raise AssertionError("unreachable")


def _step_header(step_key: str | None) -> dict[str, str]:
    # Percent-encoded: a run id may hold characters a header cannot carry.
    return {STEP_HEADER: urllib.parse.quote(step_key, safe="/:")} if step_key else {}


def _as_exec_response(info: SessionInfo) -> ExecResponse:
    exit_code = info.exit_code
    status = info.output_status or ("success" if exit_code == 0 else "failed")
    return ExecResponse(
        session_id=info.id,
        output=info.output or "",
        output_status=status,
        # hoop.dev says it in metrics.truncated; our gateway at the top level.
        truncated=info.truncated or bool((info.metrics or {}).get("truncated")),
        exit_code=exit_code,
        execution_time=int(
            ((info.end_date or info.start_date) - info.start_date).total_seconds() * 1000
        ),
        airflow_hoop=info.airflow_hoop,
    )
