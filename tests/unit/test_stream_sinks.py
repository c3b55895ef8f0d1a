"""The stream's network sinks against real local listeners started here (127.0.0.1): an HTTP
receiver that fails the first batches (plain and TLS with a CA of the test's own), and
syslog collectors over UDP and TCP reading RFC 5424 / RFC 6587 frames."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.ledger_factory import build

from airflow_hoop.errors import SinkError
from airflow_hoop.stream.cursor import CursorFile
from airflow_hoop.stream.formats import JsonlFormat
from airflow_hoop.stream.http_sink import HttpSink
from airflow_hoop.stream.pump import StreamPump, follow
from airflow_hoop.stream.syslog_sink import SyslogSink


class Receiver(ThreadingHTTPServer):
    """Answers ``fail`` with 503 for the first N batches, then stores each batch it takes."""

    def __init__(self, fail_first: int = 0, status: int = 503) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fail_first, self.status = fail_first, status
        self.requests = 0
        self.batches: list[list[dict[str, Any]]] = []
        self.auth_seen: list[str | None] = []

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}/ingest"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests += 1
        self.server.auth_seen.append(self.headers.get("Authorization"))
        if self.server.requests <= self.server.fail_first:
            self.send_response(self.server.status)
        else:
            if self.headers["Content-Type"] == "application/json":
                batch = json.loads(body)
            else:
                batch = [json.loads(line) for line in body.splitlines()]
            self.server.batches.append(batch)
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    server = Receiver(*getattr(request, "param", ()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def stream_all(tmp_path: Path, sink: Any, batch_size: int = 7) -> StreamPump:
    ledger = build(statements=15, every=10)
    records = [(r.seq, r.hash, r.body.encode()) for r in ledger.rows]

    class Raw:
        def __init__(self, seq: int, hash_: str, data: bytes) -> None:
            self.seq, self.hash, self.data = seq, hash_, data

    pump = StreamPump(JsonlFormat(), sink, CursorFile(tmp_path / "cursor.json"))
    follow(
        pump,
        lambda after: [Raw(*r) for r in records if r[0] > after],
        batch_size=batch_size,
        keep_following=False,
    )
    pump.close()
    return pump


# -- HTTP ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("receiver", [(3,)], indirect=True)
@pytest.mark.parametrize("batch_format", ["json", "ndjson"])
def test_http_retries_failed_batches_in_order(
    tmp_path: Path, receiver: Receiver, batch_format: str
) -> None:
    sink = HttpSink(
        url=receiver.url, batch_format=batch_format, backoff_seconds=0.01, token="s3cr3t"
    )
    pump = stream_all(tmp_path, sink)
    seqs = [r["seq"] for batch in receiver.batches for r in batch]
    assert seqs == list(range(1, pump.seq + 1))  # each record once, in order
    assert receiver.requests == len(receiver.batches) + 3
    assert set(receiver.auth_seen) == {"Bearer s3cr3t"}


@pytest.mark.parametrize("receiver", [(100,)], indirect=True)
def test_http_gives_up_after_max_attempts_and_the_cursor_stays(
    tmp_path: Path, receiver: Receiver
) -> None:
    sink = HttpSink(url=receiver.url, backoff_seconds=0.0, max_attempts=3, token="s3cr3t")
    with pytest.raises(SinkError) as err:
        stream_all(tmp_path, sink)
    assert "after 3 tries (last: HTTP 503)" in str(err.value)
    assert "s3cr3t" not in str(err.value)
    assert CursorFile(tmp_path / "cursor.json").load().seq == 0


@pytest.mark.parametrize("receiver", [(1, 401)], indirect=True)
def test_http_refusal_stops_at_once(tmp_path: Path, receiver: Receiver) -> None:
    with pytest.raises(SinkError, match="refused a batch with 401"):
        stream_all(tmp_path, HttpSink(url=receiver.url, backoff_seconds=0.0))
    assert receiver.requests == 1


def test_http_unreachable_is_a_typed_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    sink = HttpSink(url=f"http://127.0.0.1:{port}/x", backoff_seconds=0.0, max_attempts=2)
    with pytest.raises(SinkError, match="ConnectError"):
        stream_all(tmp_path, sink)


def _tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test SIEM CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


def test_https_verifies_the_collector_against_the_ca_file(
    tmp_path: Path, receiver: Receiver
) -> None:
    ca_file, cert_file, key_file = _tls_files(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    receiver.socket = context.wrap_socket(receiver.socket, server_side=True)
    # Without the CA: the certificate is not trusted, nothing is delivered.
    with pytest.raises(SinkError, match="ConnectError"):
        stream_all(tmp_path / "a", HttpSink(url=receiver.url, max_attempts=1))
    assert receiver.batches == []
    pump = stream_all(tmp_path / "b", HttpSink(url=receiver.url, ca_file=ca_file))
    assert sum(len(b) for b in receiver.batches) == pump.seq


# -- syslog --------------------------------------------------------------------------------------
RFC5424 = re.compile(
    rb"^<110>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z test-host airflow-hoop - ledger - "
    rb"\xef\xbb\xbf(\{.*\})$",
    re.S,
)


def test_syslog_udp_sends_one_rfc5424_message_per_record(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    got: list[bytes] = []
    done = threading.Event()

    def run() -> None:
        while not done.is_set():
            try:
                got.append(sock.recv(65535))
            except TimeoutError:
                continue

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    port = sock.getsockname()[1]
    pump = stream_all(tmp_path, SyslogSink(port=port, transport="udp", hostname="test-host"))
    for _ in range(100):
        if len(got) >= pump.seq:
            break
        done.wait(0.05)
    done.set()
    thread.join()
    sock.close()
    seqs = []
    for message in got:
        match = RFC5424.match(message)
        assert match, message[:120]
        seqs.append(json.loads(match.group(1))["seq"])
    assert seqs == list(range(1, pump.seq + 1))


def _read_octet_counted(data: bytes) -> list[bytes]:
    """RFC 6587 octet counting: ``MSG-LEN SP SYSLOG-MSG``, back to back."""
    out, i = [], 0
    while i < len(data):
        space = data.index(b" ", i)
        length = int(data[i:space])
        out.append(data[space + 1 : space + 1 + length])
        i = space + 1 + length
    return out


def test_syslog_tcp_frames_with_octet_counting(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = bytearray()

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    pump = stream_all(
        tmp_path,
        SyslogSink(port=server.getsockname()[1], transport="tcp", hostname="test-host"),
    )
    thread.join(10)  # the pump closed the connection: the reader saw the end
    server.close()
    messages = _read_octet_counted(bytes(received))
    seqs = []
    for message in messages:
        match = RFC5424.match(message)
        assert match, message[:120]
        seqs.append(json.loads(match.group(1))["seq"])
    assert seqs == list(range(1, pump.seq + 1))


def test_syslog_tcp_without_a_collector_is_a_typed_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SinkError, match="did not take a batch after 3 tries"):
        stream_all(tmp_path, SyslogSink(port=port, transport="tcp"))
