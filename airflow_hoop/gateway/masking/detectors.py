"""The built-in content detectors: a pattern (RE2 syntax) and, where the format has one, a check.

A pattern finds *candidates*; the check (Luhn for cards, mod-97 for IBANs, the SSA rules for
SSNs, a JSON header for JWTs...) turns a candidate into zero or more spans to mask. Checks see
the whole buffer, so they can look at the byte before a candidate, and they may narrow a
candidate (an IBAN followed by a word, a card number after a quantity) instead of rejecting it.

Patterns are RE2 (linear time; no look-around, no back-references) and ASCII: the scanner
runs them on UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

Span = tuple[int, int]
#: ``check(buffer, start, end) -> spans to mask`` (absolute offsets); empty means "not one".
Check = Callable[[bytes, int, int], list[Span]]


@dataclass(frozen=True)
class Detector:
    """One kind of sensitive content."""

    name: str
    info_type: str
    pattern: str
    check: Check | None = None
    #: May one match run over several cells of a column (a PEM key split across rows)?
    multi_cell: bool = False
    description: str = ""


# -- payment cards ----------------------------------------------------------------------------
#: Each ASCII digit to the digit sum of its double (Luhn), as byte values: ``sum()`` of a
#: translated slice adds them in C.
_DOUBLED = bytes.maketrans(b"0123456789", bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))
_NOT_DIGIT = re.compile(rb"[^0-9]")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a digit string."""
    data = digits.encode("ascii")
    odd = data[-1::-2]
    return (sum(odd) - 48 * len(odd) + sum(data[-2::-2].translate(_DOUBLED))) % 10 == 0


def card_brand_ok(digits: str) -> bool:
    """Is the number's prefix (IIN) and length that of a card scheme?"""
    n = len(digits)
    p2, p4 = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if 2200 <= p4 <= 2204:  # Mir
        return 16 <= n <= 19
    if 300 <= int(digits[:3]) <= 305 or p2 in (36, 38, 39):  # Diners Club
        return 14 <= n <= 19
    if p2 == 35:  # JCB
        return 16 <= n <= 19
    if p4 == 6011 or 644 <= int(digits[:3]) <= 649 or p2 in (62, 65):  # Discover, UnionPay
        return 16 <= n <= 19
    if p2 == 50 or 56 <= p2 <= 69:  # Maestro
        return 12 <= n <= 19
    return False


def _card(buf: bytes, start: int, end: int) -> list[Span]:
    # Part of a longer number or a decimal fraction: not a card.
    if start > 0 and (buf[start - 1 : start].isdigit() or buf[start - 1 : start] == b"."):
        return []
    candidate = buf[start:end]
    if candidate.isdigit():  # the usual shape, no separators: one window
        if end < len(buf) and buf[end : end + 1].isdigit():
            return []
        digits = candidate.decode()
        ok = 12 <= len(digits) <= 19 and card_brand_ok(digits) and luhn_ok(digits)
        return [(start, end)] if ok else []
    # Digit groups and where they are; a window of whole groups may be the card (a quantity
    # or a reference number may stand next to it, with the same separators). Each non-digit
    # byte ends a group (the pattern allows one separator between digits).
    groups: list[tuple[int, int]] = []
    i = start
    for part in _NOT_DIGIT.split(candidate):
        groups.append((i, i + len(part)))
        i += len(part) + 1
    if len(groups) > 1 and groups[-1][0] == end:
        groups.pop()  # a separator at the very end starts no group
    for first in range(len(groups)):
        for last in range(len(groups) - 1, first - 1, -1):
            s, e = groups[first][0], groups[last][1]
            if e < len(buf) and buf[e : e + 1].isdigit():
                continue  # the window ends inside a longer run of digits
            digits = "".join(buf[a:b].decode() for a, b in groups[first : last + 1])
            if 12 <= len(digits) <= 19 and card_brand_ok(digits) and luhn_ok(digits):
                return [(s, e)]
    return []


# -- IBAN -------------------------------------------------------------------------------------
#: Length of the IBAN of each country (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


#: A -> "10" ... Z -> "35": the letters of an IBAN as ISO 7064 counts them.
_IBAN_DIGITS = {ord(c): str(10 + i) for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")}


def iban_ok(iban: str) -> bool:
    """Country length and the ISO 7064 mod-97 check of a compact, upper-case IBAN."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    moved = iban[4:] + iban[:4]
    return int(moved.translate(_IBAN_DIGITS)) % 97 == 1


def _iban(buf: bytes, start: int, end: int) -> list[Span]:
    want = IBAN_LENGTHS.get(buf[start : start + 2].decode())
    if want is None:
        return []
    candidate = buf[start:end]
    if b" " not in candidate:  # compact: exactly the country's length
        i = start + want
        compact = candidate[:want]
    else:  # in groups: the end of the ``want``-th character that is not a space
        left, i = want, start
        for part in candidate.split(b" "):
            if len(part) >= left:
                i += left
                break
            left -= len(part)
            i += len(part) + 1
        else:
            i = end
        compact = buf[start:i].replace(b" ", b"")
    if len(compact) < want or (i < len(buf) and buf[i : i + 1].isalnum()):
        return []
    return [(start, i)] if iban_ok(compact.decode()) else []


# -- US SSN -----------------------------------------------------------------------------------
def ssn_ok(area: str, group: str, serial: str) -> bool:
    """The SSA's rules: no area 000, 666 or 9xx; no group 00; no serial 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ssn(buf: bytes, start: int, end: int) -> list[Span]:
    text = buf[start:end].decode()
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) != 9:
        return []
    if text[:3].isdigit():  # 123-45-6789 / 123 45 6789: one separator, used twice
        if text[3] != text[6]:
            return []
        s = start
    else:  # "SSN: 123456789": mask the number only
        s = end - 9
    return [(s, end)] if ssn_ok(digits[:3], digits[3:5], digits[5:]) else []


# -- phone numbers ----------------------------------------------------------------------------
def _phone(buf: bytes, start: int, end: int) -> list[Span]:
    text = buf[start:end].decode()
    digits = sum(ch.isdigit() for ch in text)
    if text[0] == "+":
        before = buf[start - 1 : start] if start else b""
        if before.isalnum() or before in (b"+", b"."):
            return []  # "1+2...", "a+b": arithmetic, not a number
        return [(start, end)] if 8 <= digits <= 15 else []
    # North American: area code and exchange do not start with 0 or 1.
    nums = [ch for ch in text if ch.isdigit()]
    if digits != 10 or nums[0] in "01" or nums[3] in "01":
        return []
    seps = [ch for ch in text.lstrip("(") if not ch.isdigit() and ch != ")"]
    if len(set(seps) - {" "}) > 1:  # 415-555.0100: not one number
        return []
    return [(start, end)]


# -- tokens with a known structure ------------------------------------------------------------
def _jwt(buf: bytes, start: int, end: int) -> list[Span]:
    header = buf[start:end].split(b".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(header + b"=" * (-len(header) % 4))
    except (binascii.Error, ValueError):
        return []
    return [(start, end)] if b'"alg"' in decoded or b'"typ"' in decoded else []


def _after_space(buf: bytes, start: int, end: int) -> Span:
    """The span of the value of "<scheme> <value>"."""
    i = start
    while buf[i] not in b" \t":
        i += 1
    while buf[i] in b" \t":
        i += 1
    return (i, end)


def _auth_header(buf: bytes, start: int, end: int) -> list[Span]:
    s, e = _after_space(buf, start, end)
    value = buf[s:e]
    if buf[start] in b"Bb" and buf[start + 1 : start + 2] == b"e":  # Bearer
        return [(s, e)] if any(48 <= c <= 57 for c in value) else []
    try:  # Basic: base64 of "user:password"
        return [(s, e)] if b":" in base64.b64decode(value, validate=True) else []
    except (binascii.Error, ValueError):
        return []


def _url_credentials(buf: bytes, start: int, end: int) -> list[Span]:
    # scheme://user:password@ -> the password (between the first ':' after '//' and the '@').
    colon = buf.index(b":", buf.index(b"//", start, end) + 2, end)
    return [(colon + 1, end - 1)] if end - 1 > colon + 1 else []


def _aws(buf: bytes, start: int, end: int) -> list[Span]:
    if b"=" not in buf[start:end] and b":" not in buf[start:end]:
        return [(start, end)]  # an access key id
    return _assignment(buf, start, end)


_PLACEHOLDERS = {b"null", b"none", b"true", b"false", b"<redacted>", b"redacted", b"changeme"}


def _assignment(buf: bytes, start: int, end: int) -> list[Span]:
    # The value starts after the first ':' or '=' that follows the name.
    i = start
    while buf[i] not in b":=":
        i += 1
    value_start = i + 1
    while value_start < end and buf[value_start] in b" \t\"'\\":
        value_start += 1
    value = buf[value_start:end]
    if not value or value.strip(b"*") == b"" or value.lower() in _PLACEHOLDERS:
        return []
    if value.startswith((b"${", b"$(", b"{{", b"<")):  # a template, not a value
        return []
    return [(value_start, end)]


def _email(buf: bytes, start: int, end: int) -> list[Span]:
    tld = buf[buf.rfind(b".", start, end) + 1 : end].lower()
    if tld in _FILE_EXTENSIONS:  # logo@2x.png is a file name
        return []
    local = buf[start : buf.index(b"@", start)]
    if local.startswith(b".") or local.endswith(b"."):
        return []
    return [(start, end)]


_FILE_EXTENSIONS = {
    b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"bmp", b"ico", b"css", b"js", b"ts",
    b"py", b"txt", b"csv", b"json", b"yaml", b"yml", b"log", b"gz", b"tar", b"zip",
}  # fmt: skip

_B64 = "A-Za-z0-9+/"
_PEM_LABEL = "-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
_PEM_END = "-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"

#: The catalogue, in the order the scanner tries them at one position (most specific first).
BUILTIN: tuple[Detector, ...] = (
    Detector(
        "private_key",
        "PRIVATE_KEY",
        # A PEM block (any lines, any cells) up to its END line; without one, everything after
        # the BEGIN line. PuTTY keys. DER bodies without their PEM lines (PKCS#1, PKCS#8,
        # SEC1, Ed25519, OpenSSH), with the base64 lines that follow.
        rf"{_PEM_LABEL}(?:[\s\S]*?{_PEM_END}|[\s\S]*)"
        r"|PuTTY-User-Key-File-[23]:(?:[\s\S]*?Private-MAC: *[0-9a-fA-F]+|[\s\S]*)"
        rf"|\b(?:MII[{_B64}]{{2}}[AgQw]IBA(?:AK|DAN)|MIG[{_B64}]AgEAMB|MHcCAQEE|MIGkAgEBBDC"
        rf"|MIHcAgEBBEI|MC4CAQAwBQYDK2Vw|b3BlbnNzaC1rZXktdjE)[{_B64}=\r\n]*",
        multi_cell=True,
        description="PEM private keys (RSA, EC, OpenSSH, PGP, encrypted), also split across "
        "lines or rows; PuTTY keys; base64 key bodies without PEM lines",
    ),
    Detector(
        "jwt",
        "JWT",
        r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)?",
        _jwt,
        description="JSON Web Tokens (JWS and JWE) whose header is JSON with alg or typ",
    ),
    Detector(
        "aws_access_key",
        "AWS_ACCESS_KEY",
        r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z2-7]{16}\b"
        r"|(?i:aws_?secret_?access_?key|aws_?secret)[\"']?[ \t]*[:=][ \t]*[\"']?[A-Za-z0-9/+]{40}\b",
        _aws,
        description="AWS access key ids, and secret access keys next to their name",
    ),
    Detector(
        "github_token",
        "GITHUB_TOKEN",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{36,255})\b",
        description="GitHub tokens (classic, fine-grained, OAuth, app)",
    ),
    Detector(
        "slack_token",
        "SLACK_TOKEN",
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}|\bxapp-\d-[A-Z0-9]+-\d+-[a-f0-9]+"
        r"|https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{20,}",
        description="Slack bot/user/app tokens and incoming-webhook URLs",
    ),
    Detector(
        "stripe_key",
        "STRIPE_KEY",
        r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}\b|\bwhsec_[A-Za-z0-9]{24,}\b",
        description="Stripe secret and restricted keys, webhook signing secrets",
    ),
    Detector(
        "google_api_key",
        "GOOGLE_API_KEY",
        r"\bAIza[0-9A-Za-z_-]{35}",
        description="Google API keys",
    ),
    Detector(
        "hoop_api_key",
        "HOOP_API_KEY",
        r"\bhpk_[A-Za-z0-9_-]{20,}",
        description="hoop / airflow-hoop gateway API keys",
    ),
    Detector(
        "vault_token",
        "VAULT_TOKEN",
        r"\bhv[sbr]\.[A-Za-z0-9_-]{24,}|\b[sbr]\.[A-Za-z0-9]{24,}\b",
        description="Vault and OpenBao service, batch and recovery tokens",
    ),
    Detector(
        "auth_header",
        "AUTH_HEADER",
        r"\b[Bb]earer[ \t]+[A-Za-z0-9._~+/=-]{16,}|\b[Bb]asic[ \t]+[A-Za-z0-9+/]{8,}={0,2}",
        _auth_header,
        description="the credential of 'Bearer <token>' and 'Basic <user:password>'",
    ),
    Detector(
        "url_credentials",
        "URL_CREDENTIALS",
        r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]+:[^\s/@]+@",
        _url_credentials,
        description="the password in scheme://user:password@host URLs",
    ),
    Detector(
        "email",
        "EMAIL_ADDRESS",
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b",
        _email,
        description="e-mail addresses (ASCII)",
    ),
    Detector(
        "iban",
        "IBAN_CODE",
        r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}",
        _iban,
        description="IBANs, compact or in groups of four, with the country length and mod-97",
    ),
    Detector(
        "payment_card",
        "CREDIT_CARD",
        r"\d(?:[ -]?\d){11,18}",
        _card,
        description="payment card numbers: scheme prefix and length, Luhn checksum",
    ),
    Detector(
        "us_ssn",
        "US_SSN",
        r"\b\d{3}-\d{2}-\d{4}\b|\b\d{3} \d{2} \d{4}\b|(?i:\bssn)[ \t]*[:#=]?[ \t]*\d{9}\b",
        _ssn,
        description="US social security numbers (SSA rules), bare 9 digits only after 'SSN'",
    ),
    Detector(
        "phone",
        "PHONE_NUMBER",
        r"\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){2,6}\b"
        r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}\b|\b\d{3}[ .-]\d{3}[ .-]\d{4}\b",
        _phone,
        description="phone numbers in international (+) form and North American form",
    ),
    Detector(
        "secret_assignment",
        "SECRET",
        r"(?i:password|passwd|pwd|secret|secret[_-]?key|api[_-]?key|access[_-]?token"
        r"|auth[_-]?token|client[_-]?secret|token)(?:\\?[\"'])?[ \t]*[:=][ \t]*(?:\\?[\"'])?"
        r"[^\s\"'\\,;&]{4,}",
        _assignment,
        description="the value of password=..., api_key: ..., token=... (also PGPASSWORD=...)",
    ),
)

BY_NAME: dict[str, Detector] = {d.name: d for d in BUILTIN}
