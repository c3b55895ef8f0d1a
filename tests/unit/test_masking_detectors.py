"""The masking detectors on a corpus of positives and negatives, in SQL cells and in shell text.

Every positive must be found (zero misses); every negative must be left alone. Precision and
recall per detector are printed as a table at the end of the module (also on success).
Keys are generated here with ``cryptography``; card numbers get their Luhn digit computed.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from airflow_hoop.gateway.masking.detectors import BUILTIN, luhn_ok
from airflow_hoop.gateway.masking.engine import ColumnInfo, MaskingEngine
from airflow_hoop.gateway.masking.rules import MaskingPolicy
from airflow_hoop.gateway.masking.scanner import Scanner
from airflow_hoop.gateway.masking.stream import StreamMasker

RNG = random.Random(7)


def _luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(RNG.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return next(body + d for d in string.digits if luhn_ok(body + d))


def _b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _pem(key: object, fmt: ser.PrivateFormat, password: bytes | None = None) -> str:
    enc = ser.BestAvailableEncryption(password) if password else ser.NoEncryption()
    return key.private_bytes(ser.Encoding.PEM, fmt, enc).decode()  # type: ignore[attr-defined]


def _keys() -> list[str]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    pkcs1 = _pem(rsa_key, ser.PrivateFormat.TraditionalOpenSSL)
    pkcs8 = _pem(rsa_key, ser.PrivateFormat.PKCS8)
    der_body = "".join(pkcs8.splitlines()[1:-1])  # base64 body without its PEM lines
    return [
        pkcs1,
        pkcs8,
        _pem(ec_key, ser.PrivateFormat.TraditionalOpenSSL),
        _pem(ec_key, ser.PrivateFormat.PKCS8),
        _pem(ed_key, ser.PrivateFormat.OpenSSH),
        _pem(rsa_key, ser.PrivateFormat.PKCS8, b"pass phrase"),
        json.dumps(pkcs8)[1:-1],  # in a JSON string: the line breaks are "\n" escapes
        pkcs8.replace("\n", "\r\n"),
        "\n".join(pkcs1.splitlines()[:6]),  # cut off: no END line (a truncated output)
        der_body,
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0000\n-----END PGP PRIVATE KEY BLOCK-----",
        "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nPrivate-Lines: 1\nAAAAgQ\n"
        "Private-MAC: 8a7b6c5d4e3f",
    ]


def _jwt(header: dict[str, object], payload: dict[str, object], sig: bool = True) -> str:
    signature = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return f"{_b64url(header)}.{_b64url(payload)}.{signature if sig else ''}"


def _token(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(RNG.choice(alphabet) for _ in range(n))


CARDS = [
    "4111111111111111", "4012888888881881", "4222222222222", "5555555555554444",
    "5105105105105100", "2223003122003222", "378282246310005", "371449635398431",
    "6011111111111117", "6011000990139424", "30569309025904", "38520000023237",
    "3530111333300000", "3566002020360505", "6200000000000005", "6759649826438453",
    "2200000000000004",
    *(_luhn_complete(p, n) for p, n in [("4", 16), ("51", 16), ("37", 15), ("65", 16)] * 3),
]  # fmt: skip


def _grouped(card: str, sep: str) -> str:
    if len(card) == 15:
        return sep.join([card[:4], card[4:10], card[10:]])
    return sep.join(card[i : i + 4] for i in range(0, len(card), 4))


@dataclass
class Case:
    detector: str
    positives: list[str] = field(default_factory=list)  # each holds exactly this secret
    negatives: list[str] = field(default_factory=list)  # text that holds nothing sensitive


CORPUS: list[Case] = [
    Case(
        "payment_card",
        positives=[c for card in CARDS for c in (card, _grouped(card, " "), _grouped(card, "-"))],
        negatives=[
            "4111111111111112", "5555555555554443", "1234567812345678", "0000000000000000",
            "9780306406157", "1700000000000", "4111111111111111111111111", "0.4111111111111111",
            "order 20240115000123", "2024-01-15", "192.168.100.200", "+1 415 555 0100",
            "8c3d2f1a-5b6e-4f7a-9c0d-1e2f3a4b5c6d", "41111111111",
        ],
    ),
    Case(
        "email",
        positives=[
            "alice@example.com", "Bob.Smith+tag@mail.example.co.uk", "x_y-z@sub-domain.io",
            "UPPER@EXAMPLE.ORG", "o'brien@example.ie".replace("'", ""), "first.last@t.co",
            "admin@xn--bcher-kva.example", "n1@d1.museum",
        ],
        negatives=[
            "user@localhost", "@handle", "a@b", "logo@2x.png", "name at example dot com",
            "foo@bar..com", "me@@example.com", "the price is 5@3.00",
        ],
    ),
    Case(
        "jwt",
        positives=[
            _jwt({"alg": "HS256", "typ": "JWT"}, {"sub": "1234567890", "name": "x"}),
            _jwt({"alg": "RS256", "kid": "k1"}, {"iss": "vault", "exp": 1}),
            _jwt({"alg": "none"}, {"sub": "s"}, sig=False),
            f"{_b64url({'alg': 'RSA-OAEP', 'enc': 'A256GCM'})}.{_token(40)}.{_token(16)}"
            f".{_token(60)}.{_token(22)}",
        ],
        negatives=[
            "eyJ", _b64url({"foo": "bar"}), "header.payload.signature",
            f"{_b64url({'foo': 'bar'})}.{_b64url({'a': 1})}.sig",
        ],
    ),
    Case(
        "private_key",
        positives=_keys(),
        negatives=[
            "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBa\n"
            "-----END CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----",
            "rotate the private key every 90 days", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI user",
        ],
    ),
    Case(
        "aws_access_key",
        positives=[
            "AKIAIOSFODNN7EXAMPLE", "ASIA" + _token(16, string.ascii_uppercase + "234567"),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ],
        negatives=["AKIA1234", "AKIAIOSFODNN7EXAMPL", "aws_region=eu-west-1"],
    ),
    Case(
        "github_token",
        positives=["ghp_" + _token(36), "gho_" + _token(36), "github_pat_" + _token(22) + "_" + _token(59)],
        negatives=["ghp_short", "github_pat_", "gh_" + _token(36)],
    ),
    Case(
        "slack_token",
        positives=[
            "xoxb-" + "-".join(_token(12, string.digits) for _ in range(2)) + "-" + _token(24),
            "xoxp-1234567890-" + _token(20),
            "https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF2/" + _token(24),
        ],
        negatives=["xoxb-", "xoxz-1234567890", "https://hooks.slack.com/"],
    ),
    Case(
        "stripe_key",
        positives=["sk_live_" + _token(24), "rk_test_" + _token(24), "whsec_" + _token(32)],
        negatives=["sk_live_abc", "pk_live_" + _token(24), "sk_prod_" + _token(24)],
    ),
    Case("google_api_key", positives=["AIza" + _token(35, string.ascii_letters + string.digits + "_-")], negatives=["AIza123"]),
    Case("hoop_api_key", positives=["hpk_" + secrets.token_urlsafe(32)], negatives=["hpk_short"]),
    Case(
        "vault_token",
        positives=["hvs." + _token(90), "hvb." + _token(60), "s." + _token(24)],
        negatives=["s.abc", "os.path.join", "hvs.short"],
    ),
    Case(
        "auth_header",
        positives=["eyA1b2c3d4e5f6g7h8i9j0k", "dXNlcjpwYXNzd29yZA=="],
        negatives=["Bearer token", "Basic authentication is enabled", "bearer bonds"],
    ),
    Case("url_credentials", positives=["s3cr3t-P@ss"], negatives=["postgresql://db.example:5432/app", "https://example.com/a:b"]),
    Case(
        "us_ssn",
        positives=["123-45-6789", "078-05-1120", "123 45 6789", "219-09-9999"],
        negatives=["000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000", "123-45-67890", "415-555-0100"],
    ),
    Case(
        "iban",
        positives=[
            "DE89370400440532013000", "GB82WEST12345698765432", "FR1420041010050500013M02606",
            "NL91ABNA0417164300", "BE68539007547034", "CH9300762011623852957",
            "ES9121000418450200051332", "IT60X0542811101000000123456",
            "DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32",
        ],
        negatives=["DE89370400440532013001", "XX89370400440532013000", "DE8937040044", "GB82WEST1234569876543"],
    ),
    Case(
        "phone",
        positives=[
            "+1 415 555 0100", "+1-415-555-0100", "(415) 555-0100", "415-555-0100", "415.555.0100",
            "+44 20 7946 0958", "+4915112345678", "+33 1 23 45 67 89", "+91 98765 43210",
            "+81 3-1234-5678",
        ],
        negatives=["2024-01-15", "192.168.1.1", "1.2.3", "+5 points", "12:30:45", "123-456-789", "(015) 555-0100", "1+1=2"],
    ),
    Case(
        "secret_assignment",
        positives=["hunter2!", "Xy9#kQ2mP", "t0k3n-value"],
        negatives=["password: ***", "password=${PGPASSWORD}", "token: null", "password_file=/run/x", "the password is required"],
    ),
]  # fmt: skip

#: Positives of detectors that find the value only in its context ("Bearer <t>", "key=<v>").
CONTEXT = {
    "auth_header": ["Authorization: Bearer {}", "Authorization: Basic {}"],
    "url_credentials": ["postgresql://app_user:{}@db.example:5432/app"],
    "secret_assignment": ["PGPASSWORD={}", 'config: {{"password": "{}"}}', "api_key = {}"],
}
#: ...and the AWS secret key, which only counts next to its name.
AWS_SECRET = "aws_secret_access_key = {}"


def _in_context(case: Case, index: int, value: str) -> str:
    if case.detector in CONTEXT:
        templates = CONTEXT[case.detector]
        return templates[index % len(templates)].format(value)
    if case.detector == "aws_access_key" and "/" in value:
        return AWS_SECRET.format(value)
    return value


def _sentences(value: str) -> list[str]:
    """The value alone, in a sentence, in CSV, in JSON, and after a line break."""
    return [
        value,
        f"please contact {value} today.",
        f"42,{value},ok",
        json.dumps({"v": value}),
        f"x\n{value}\n",
    ]


@dataclass
class Tally:
    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0
    misses: list[str] = field(default_factory=list)
    false_hits: list[str] = field(default_factory=list)


TALLY: dict[str, Tally] = {}


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print precision and recall per detector when the module ends."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not TALLY:
        return
    lines = ["", "masking detectors: precision / recall on the corpus"]
    lines.append(
        f"{'detector':<20}{'TP':>6}{'FN':>6}{'FP':>6}{'TN':>6}{'precision':>11}{'recall':>8}"
    )
    total = Tally()
    for name, t in sorted(TALLY.items()):
        lines.append(_row(name, t))
        total.tp, total.fn, total.fp, total.tn = (
            total.tp + t.tp,
            total.fn + t.fn,
            total.fp + t.fp,
            total.tn + t.tn,
        )
    lines.append(_row("all", total))
    with capture.global_and_fixture_disabled():  # shown on success too, not as captured output
        for line in lines:
            reporter.write_line(line)


def _row(name: str, t: Tally) -> str:
    precision = t.tp / (t.tp + t.fp) if t.tp + t.fp else 1.0
    recall = t.tp / (t.tp + t.fn) if t.tp + t.fn else 1.0
    return f"{name:<20}{t.tp:>6}{t.fn:>6}{t.fp:>6}{t.tn:>6}{precision:>11.3f}{recall:>8.3f}"


@pytest.mark.parametrize("case", CORPUS, ids=[c.detector for c in CORPUS])
def test_detector_corpus(case: Case) -> None:
    """Alone, each detector finds each positive in every setting and nothing in the negatives."""
    detector = next(d for d in BUILTIN if d.name == case.detector)
    scanner = Scanner([detector])
    tally = TALLY.setdefault(case.detector, Tally())
    for index, value in enumerate(case.positives):
        for text in _sentences(_in_context(case, index, value)):
            # In JSON the value is escaped (a PEM key's line breaks become "\\n").
            secret = value if value in text else json.dumps(value)[1:-1]
            if _covers(text.encode(), scanner, secret.encode()):
                tally.tp += 1
            else:
                tally.fn += 1
                tally.misses.append(text[:80])
    for text in case.negatives:
        if scanner.scan(text.encode()):
            tally.fp += 1
            tally.false_hits.append(text[:80])
        else:
            tally.tn += 1
    assert tally.misses == [], f"{case.detector} missed: {tally.misses}"
    assert tally.false_hits == [], f"{case.detector} matched negatives: {tally.false_hits}"


def _covers(data: bytes, scanner: Scanner, secret: bytes) -> bool:
    """After masking the found spans, no character run of the secret of 8+ is left."""
    out, pos = [], 0
    for hit in scanner.scan(data):
        out.append(data[pos : hit.start])
        out.append(b"\x01")
        pos = hit.end
    out.append(data[pos:])
    masked = b"".join(out)
    return secret not in masked and all(
        part not in masked for part in _chunks(secret) if len(part) >= 8
    )


def _chunks(secret: bytes) -> list[bytes]:
    return [secret[i : i + 8] for i in range(0, max(len(secret) - 7, 1), 4)]


ALL = MaskingPolicy(name="corpus", detectors=["all"])


def _all_positives() -> list[str]:
    return [_in_context(c, i, v) for c in CORPUS for i, v in enumerate(c.positives)]


def test_all_detectors_together_in_sql_cells() -> None:
    """Every positive, as a cell of a result (one per row), is masked with all detectors on."""
    engine = MaskingEngine(ALL)
    masker = engine.start()
    values = _all_positives()
    rows = [(i, f"row {i}: {v} end") for i, v in enumerate(values)]
    masked = masker.mask_rows([ColumnInfo("id"), ColumnInfo("note")], rows)
    for (_, original), (_, out) in zip(rows, masked, strict=True):
        secret = original.split(": ", 1)[1].rsplit(" end", 1)[0]
        assert secret not in out, (original[:80], out[:80])
    # Combining detectors adds no false positive: a negative of one detector that another
    # finds on its own (415-555-0100 is no SSN but is a phone number) is no negative here.
    negatives = [n for c in CORPUS for n in c.negatives]
    singles = [Scanner([d]) for d in BUILTIN]
    clean = [n for n in negatives if not any(sc.scan(n.encode()) for sc in singles)]
    out = masker.mask_rows([ColumnInfo("note")], [(n,) for n in clean])
    assert [o for (o,) in out] == clean
    record = masker.record()
    assert record.total_redact_count >= len(values)
    assert not any(v in record.model_dump_json() for v in values if len(v) >= 8)


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_all_detectors_in_streamed_shell_output(chunk: int) -> None:
    """Shell output arrives in chunks: no secret survives a chunk boundary."""
    values = _all_positives()
    text = "".join(f"line {i}: {v}\n" for i, v in enumerate(values))
    stream = StreamMasker(MaskingEngine(ALL).start())
    out = "".join(stream.feed(text[i : i + chunk]) for i in range(0, len(text), chunk))
    out += stream.flush()
    for value in values:
        for line in value.splitlines() or [value]:
            if len(line) >= 8 and not line.startswith("-----END"):
                assert line not in out, (chunk, line[:60])
    assert stream.failed is None


def test_a_key_split_across_rows_is_masked_in_every_row() -> None:
    """A PEM key stored one line per row (ORDER BY line_no): every body line is masked."""
    pem = _keys()[1]
    lines = pem.splitlines()
    masker = MaskingEngine(ALL).start()
    rows = [(n, line) for n, line in enumerate(lines)]
    masked = masker.mask_rows([ColumnInfo("line_no"), ColumnInfo("line")], rows)
    body = [line for line in lines if not line.startswith("-----")]
    assert not any(out in body for _, out in masked)
    assert masker.record().info_types["private_key"] == len(lines)
