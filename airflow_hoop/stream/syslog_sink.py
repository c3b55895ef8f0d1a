"""The syslog sink: RFC 5424 messages over UDP, or TCP with octet counting (RFC 6587).

The standard library's ``SysLogHandler`` writes the older BSD format (RFC 3164) and knows no
octet counting, so the framing (a few lines) is here. Over UDP a message is one datagram and
delivery is not acknowledged (the protocol has no acknowledgement); over TCP a batch counts as
delivered once the kernel accepted every byte. Neither is as strong as the HTTP sink's 2xx:
docs/signals.md says so.
"""

from __future__ import annotations

import socket
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from airflow_hoop.errors import SinkError

#: The largest UDP payload over IPv4.
MAX_DATAGRAM = 65_507
_BOM = b"\xef\xbb\xbf"


def _header_field(value: str, limit: int) -> str:
    # RFC 5424: PRINTUSASCII (33..126), "-" when empty.
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


class SyslogSink(BaseModel):
    """RFC 5424 syslog to a collector (rsyslog, syslog-ng, a SIEM's syslog input)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["syslog"] = "syslog"
    host: str = "127.0.0.1"
    port: int = Field(514, ge=1, le=65535)
    transport: Literal["udp", "tcp"] = "udp"
    #: 13 is "log audit"; PRI = facility * 8 + severity
    facility: int = Field(13, ge=0, le=23)
    severity: int = Field(6, ge=0, le=7, description="6: informational")
    app_name: str = "airflow-hoop"
    hostname: str = Field(default_factory=socket.gethostname)
    timeout_seconds: float = Field(10.0, gt=0)
    max_attempts: int = Field(3, ge=1, description="TCP reconnects per batch")

    _sock: socket.socket | None = PrivateAttr(default=None)

    def frame(self, line: bytes) -> bytes:
        """One RFC 5424 message: ``<PRI>1 TIME HOST APP PROCID MSGID - BOM MSG``."""
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        header = (
            f"<{self.facility * 8 + self.severity}>1 {now} "
            f"{_header_field(self.hostname, 255)} {_header_field(self.app_name, 48)} - ledger -"
        )
        return header.encode() + b" " + _BOM + line

    def deliver(self, lines: list[bytes]) -> None:
        messages = [self.frame(line) for line in lines]
        if self.transport == "udp":
            self._send_udp(messages)
        else:
            self._send_tcp(b"".join(b"%d %s" % (len(m), m) for m in messages))

    def _send_udp(self, messages: list[bytes]) -> None:
        sock = self._open(socket.SOCK_DGRAM)
        try:
            for message in messages:
                if len(message) > MAX_DATAGRAM:
                    raise SinkError(
                        f"a syslog message of {len(message)} bytes does not fit a UDP datagram",
                        "use transport: tcp for large events",
                    )
                sock.sendto(message, (self.host, self.port))
        except OSError as exc:
            self.close()
            raise SinkError(f"syslog {self._where()} refused a message ({exc.strerror})") from None

    def _send_tcp(self, data: bytes) -> None:
        why = ""
        for _ in range(self.max_attempts):
            try:
                self._open(socket.SOCK_STREAM).sendall(data)
                return
            except OSError as exc:
                # The whole batch again on a new connection: the collector may see a repeat.
                self.close()
                why = exc.strerror or type(exc).__name__
        raise SinkError(
            f"syslog {self._where()} did not take a batch after {self.max_attempts} tries ({why})",
            "check that the collector listens; the batch is sent again on restart",
        )

    def _open(self, kind: socket.SocketKind) -> socket.socket:
        if self._sock is None:
            if kind == socket.SOCK_STREAM:
                sock = socket.create_connection((self.host, self.port), self.timeout_seconds)
            else:
                info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(info[0], socket.SOCK_DGRAM)
            sock.settimeout(self.timeout_seconds)
            self._sock = sock
        return self._sock

    def _where(self) -> str:
        return f"{self.transport}://{self.host}:{self.port}"

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
