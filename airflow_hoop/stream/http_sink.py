"""The HTTP sink: batches POSTed as a JSON array or NDJSON, retried with backoff.

A batch counts as delivered on a 2xx answer only. 5xx, 408, 429 and transport errors are
retried with exponential backoff (the same batch, in order: nothing after it is sent first);
any other answer is a configuration problem and stops the stream at once. TLS certificates
are always verified, against the system's CAs or ``ca_file``.
"""

from __future__ import annotations

import random
import ssl
import time
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from airflow_hoop.errors import SinkError

_RETRIED = {408, 429}
_CONTENT_TYPE = {"json": "application/json", "ndjson": "application/x-ndjson"}


class HttpSink(BaseModel):
    """POST each batch to ``url`` (a SIEM's HTTP collector, a log shipper's HTTP input)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["http"] = "http"
    url: str = Field(pattern=r"^https?://")
    batch_format: Literal["json", "ndjson"] = "json"
    #: PEM bundle of the CAs to trust instead of the system's (a private SIEM CA)
    ca_file: Path | None = None
    #: sent as ``Authorization: <auth_scheme> <token>``; never logged
    token: SecretStr | None = None
    auth_scheme: str = "Bearer"
    timeout_seconds: float = Field(10.0, gt=0)
    max_attempts: int = Field(10, ge=1, description="tries per batch before the stream stops")
    backoff_seconds: float = Field(0.5, ge=0, description="first wait; doubles per try")
    max_backoff_seconds: float = Field(30.0, ge=0)

    _client: httpx.Client | None = PrivateAttr(default=None)

    def deliver(self, lines: list[bytes]) -> None:
        if self.batch_format == "json":
            content = b"[" + b",".join(lines) + b"]"
        else:
            content = b"\n".join(lines) + b"\n"
        client = self._open()
        why = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = client.post(self.url, content=content)
            except httpx.TransportError as exc:
                why = f"{type(exc).__name__}"
            else:
                if response.is_success:
                    return
                if response.status_code < 500 and response.status_code not in _RETRIED:
                    raise SinkError(
                        f"the HTTP sink {self._where()} refused a batch with "
                        f"{response.status_code}",
                        "check the sink's URL and token; the batch is sent again on restart",
                    )
                why = f"HTTP {response.status_code}"
            if attempt < self.max_attempts:
                time.sleep(self._backoff(attempt))
        raise SinkError(
            f"the HTTP sink {self._where()} did not take a batch after {self.max_attempts} "
            f"tries (last: {why})",
            "check that the sink runs and is reachable; the batch is sent again on restart",
        )

    def _backoff(self, attempt: int) -> float:
        wait = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return wait * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not a secret)

    def _where(self) -> str:
        url = httpx.URL(self.url)  # without credentials or query
        return f"{url.scheme}://{url.host}{f':{url.port}' if url.port else ''}{url.path}"

    def _open(self) -> httpx.Client:
        if self._client is None:
            verify: ssl.SSLContext | bool = True
            if self.ca_file is not None:
                verify = ssl.create_default_context(cafile=str(self.ca_file))
            headers = {"Content-Type": _CONTENT_TYPE[self.batch_format]}
            if self.token is not None:
                headers["Authorization"] = f"{self.auth_scheme} {self.token.get_secret_value()}"
            self._client = httpx.Client(
                verify=verify, headers=headers, timeout=self.timeout_seconds, trust_env=False
            )
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
