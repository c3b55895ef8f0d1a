"""Receivers of approval notifications for the tests: a local SMTP sink (aiosmtpd) and a local
webhook receiver (a threaded HTTP server) that records what it was sent, can answer errors, or
hold each request until the test releases it."""

from __future__ import annotations

import contextlib
import email
import email.policy
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.gateway_support import free_port


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]

    def text(self) -> str:
        """Every text part, decoded."""
        parts = []
        for part in self.message.walk():
            if part.get_content_maintype() == "text":
                parts.append(part.get_content())
        return "\n".join(parts)


class _Sink:
    def __init__(self) -> None:
        self.mails: list[Mail] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[int, list[Mail]]]:
    """A local SMTP server on 127.0.0.1: (port, the mails it received)."""
    from aiosmtpd.controller import Controller

    sink = _Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, sink.mails
    finally:
        controller.stop()


@dataclass
class Posted:
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.perf_counter() when it arrived


@dataclass
class WebhookReceiver:
    """What was posted; ``mode``: "ok" (204), "error" (500) or "hold" (wait for ``release``)."""

    url: str
    posted: list[Posted] = field(default_factory=list)
    mode: str = "ok"
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def webhook_receiver(path: str = "/hooks/approvals") -> Iterator[WebhookReceiver]:
    port = free_port()
    receiver = WebhookReceiver(url=f"http://127.0.0.1:{port}{path}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.posted.append(Posted(headers, body, time.perf_counter()))
            receiver.arrived.set()
            if receiver.mode == "hold":
                receiver.release.wait(30)
            status = 500 if receiver.mode == "error" else 204
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the gateway gave up waiting (its timeout)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "it") -> Any:
    """Poll until ``predicate()`` is truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
