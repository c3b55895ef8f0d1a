"""A hoop.dev stand-in for the tests: replays recorded exchanges and checks what the client sends.

A recording (``recordings/*.json``) is an ordered list of exchanges written from hoop's API
(reference/hoop-api.md, hoop 1.148: §0 conventions, §1.2 API keys, §3 exec, §4 reviews,
§5 sessions). The server answers the n-th request with the n-th recorded response, after
checking that the request is the recorded one (method, path, query, the JSON fields the
recording names) and that it is something a real hoop would accept: ``Authorization: Bearer
hpk_...``, a ``User-Client`` header, and a ``POST /api/sessions`` body of hoop's
``SessionPostBody`` type with its limits (at most 20 metadata keys, keys and values under 2500
characters, a correlation_id of at most 255 printable ASCII characters, base64 env_vars).
Every mismatch is kept in ``problems`` and answered 400, so a test fails on the request, not
on some later symptom.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

RECORDINGS = Path(__file__).parent / "recordings"
#: The API key every recording expects unless an exchange says otherwise.
API_KEY = "hpk_cOnTrAcTtEsTkEyAAAAAAAAAAAAAAAAAAAAAAAAAAA"
SERVER_HEADER = "hoopgateway/1.148.0"


class HoopSessionPostBody(BaseModel):
    """hoop's ``SessionPostBody`` (gateway/api/session/session.go): what ``POST /api/sessions`` binds.

    hoop ignores unknown fields; this stand-in refuses them, so that a client in hoop.dev mode
    is caught sending something hoop would silently drop (bound parameters, for instance).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    connection: str = Field(min_length=1)
    script: str
    client_args: list[str] = Field(default_factory=list)
    env_vars: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=20)
    correlation_id: str | None = Field(None, max_length=255)
    session_batch_id: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    jira_fields: dict[str, str] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if len(key) >= 2500 or len(item) >= 2500:
                raise ValueError("metadata key or value must not contain more than 2500 chars")
        return value

    @field_validator("correlation_id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not all(0x20 <= ord(c) <= 0x7E for c in value):
            raise ValueError("correlation_id must be printable ASCII")
        return value

    @field_validator("env_vars")
    @classmethod
    def _env_vars(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not key.startswith(("envvar:", "filesystem:")):
                raise ValueError(f"env_vars key {key!r} lacks envvar:/filesystem:")
            try:
                base64.b64decode(item, validate=True)
            except binascii.Error:
                raise ValueError(f"env_vars {key!r} is not base64") from None
        return value


class RecordedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str
    path: str
    query: dict[str, str] = Field(default_factory=dict)
    json_subset: dict[str, Any] | None = Field(None, alias="json")
    bearer: str = API_KEY
    empty_body: bool = False
    invalid_body: bool = Field(
        False, description="the body breaks hoop's rules on purpose (the response is the refusal)"
    )


class RecordedResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: int
    json_body: Any = Field(None, alias="json")
    text: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class Exchange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = ""
    request: RecordedRequest
    response: RecordedResponse
    psql_script: str | None = Field(
        None, description="the response's output/text is psql's for this script (re-checked)"
    )


class Recording(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str
    reference: str
    exchanges: list[Exchange] = Field(min_length=1)

    @classmethod
    def load(cls, name: str) -> Recording:
        return cls.model_validate_json((RECORDINGS / f"{name}.json").read_text())


def recording_names() -> list[str]:
    return sorted(p.stem for p in RECORDINGS.glob("*.json"))


class ReplayServer:
    """Serves one recording on 127.0.0.1; use as a context manager."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.problems: list[str] = []
        self.received: list[Any] = []  # JSON bodies, in order, for the test to look at
        self.served = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def assert_complete(self) -> None:
        """Every request was the recorded one, and every recorded request was made."""
        assert not self.problems, self.problems
        left = self.recording.exchanges[self.served :]
        assert not left, [f"{e.request.method} {e.request.path}" for e in left]

    # -- one request -------------------------------------------------------------------------
    def answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            if self.served >= len(self.recording.exchanges):
                return self._refuse(f"unexpected request {method} {target} (all served)")
            exchange = self.recording.exchanges[self.served]
            self.served += 1
        if body:
            try:
                self.received.append(json.loads(body))
            except ValueError:
                self.received.append(None)
        problem = _check(exchange.request, method, target, headers, body)
        if problem:
            return self._refuse(f"{method} {target}: {problem}")
        return _response(exchange.response)

    def _refuse(self, problem: str) -> tuple[int, dict[str, str], bytes]:
        self.problems.append(problem)
        body = json.dumps({"message": f"replay: {problem}"}).encode()
        return 400, {"Content-Type": "application/json"}, body


def _check(
    expected: RecordedRequest, method: str, target: str, headers: dict[str, str], body: bytes
) -> str | None:
    url = urlsplit(target)
    if (method, url.path) != (expected.method, expected.path):
        return f"expected {expected.method} {expected.path}"
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    for key, value in expected.query.items():
        if query.get(key) != value:
            return f"query {key}={query.get(key)!r}, expected {value!r}"
    if headers.get("authorization") != f"Bearer {expected.bearer}":
        return "Authorization is not 'Bearer <the recorded hpk_ key>'"
    if not headers.get("user-client"):
        return "no User-Client header (hoop derives the session origin from it)"
    if expected.empty_body and body:
        return "a body was sent to an endpoint that takes none"
    if expected.json_subset is None:
        return None
    try:
        sent = json.loads(body)
    except ValueError:
        return "the body is not JSON"
    if "json" not in headers.get("content-type", ""):
        return "Content-Type is not application/json"
    if (method, url.path) == ("POST", "/api/sessions"):
        try:
            HoopSessionPostBody.model_validate(sent)
        except ValidationError as exc:
            if not expected.invalid_body:
                error = exc.errors()[0]
                return f"not a hoop SessionPostBody: {error['loc']} {error['msg']}"
        else:
            if expected.invalid_body:
                return "the body was expected to break hoop's rules but does not"
    for key, value in expected.json_subset.items():
        if sent.get(key) != value:
            return f"body field {key!r} is {sent.get(key)!r}, expected {value!r}"
    return None


def _response(recorded: RecordedResponse) -> tuple[int, dict[str, str], bytes]:
    headers = {"Server": SERVER_HEADER, **recorded.headers}
    if recorded.text is not None:
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return recorded.status, headers, recorded.text.encode()
    if recorded.status == 204:
        return 204, headers, b""
    headers.setdefault("Content-Type", "application/json; charset=utf-8")
    return recorded.status, headers, json.dumps(recorded.json_body).encode()


def _handler(server: ReplayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, out_headers, payload = server.answer(self.command, self.path, headers, body)
            self.send_response(status)
            for key, value in out_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return Handler
