"""How a value is replaced: redact, partial, hash (keyed HMAC) or null.

``hash`` is HMAC-SHA256 keyed by a secret the gateway reads from Vault, so equal values give
equal tokens (a reviewer can still join and count) while nobody without the key can test a
guess. Tokens are ``hmac:`` and 32 hex digits (128 bits).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from airflow_hoop.errors import HoopError

try:
    import _hashlib  # OpenSSL's hashes, when the interpreter has them
except ImportError:  # pragma: no cover - an interpreter without OpenSSL
    _hashlib = None  # type: ignore[assignment]

REDACTED = "***"
HMAC_PREFIX = "hmac:"
_HEX_CHARS = 32

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_STARS = str.maketrans(_ALNUM, "*" * len(_ALNUM))


class MaskingError(HoopError):
    """Output could not be masked as the connection's policy requires (strict mode)."""

    link = "masking"
    default_fix = (
        "correct the masking policy of the connection, or select less data; "
        "nothing unmasked was returned or recorded"
    )


def placeholder(info_type: str) -> str:
    """What ``redact`` leaves of a detected value: its kind, as hoop's Presidio masking does."""
    return f"<{info_type}>"


def partial(text: str, keep_last: int = 4) -> str:
    """Letters and digits become ``*`` except the last ``keep_last``; separators stay.

    A value with fewer than twice ``keep_last`` letters and digits is masked whole: showing
    half of it or more is not masking.
    """
    if text.isascii() and text[-keep_last:].isalnum():  # the usual shape: ends in alnums
        prefix = text[:-keep_last]
        masked = prefix.translate(_STARS)
        if masked.count("*") - prefix.count("*") >= keep_last:
            return masked + text[-keep_last:]
        return text.translate(_STARS)
    if not text.isascii():
        chars = [("*" if c.isalnum() else c) for c in text]
        kept = 0
        for i in range(len(text) - 1, -1, -1):
            if kept == keep_last:
                break
            if text[i].isalnum():
                chars[i] = text[i]
                kept += 1
        hidden = sum(c == "*" for c in chars) - text.count("*")
        return "".join(chars) if hidden >= keep_last else text.translate(_STARS)
    cut, kept = len(text), 0
    while cut > 0 and kept < keep_last:
        cut -= 1
        if text[cut].isalnum():
            kept += 1
    prefix = text[:cut]
    masked = prefix.translate(_STARS)
    hidden = masked.count("*") - prefix.count("*")
    if hidden < keep_last:
        return text.translate(_STARS)
    return masked + text[cut:]


def _sha256_constructor() -> Callable[[bytes], Any]:
    """CPython's own SHA-256 (``_sha2`` from 3.12, ``_sha256`` before), else OpenSSL's.

    Same function, same digests; the built-in one copies a context with a ``memcpy`` where
    OpenSSL 3 goes through its provider layer, which makes a short value's HMAC 15% cheaper.
    OpenSSL's is kept when it runs in FIPS mode (a validated module may be required there)
    and when the interpreter was built without the built-in hashes.
    """
    fips = getattr(_hashlib, "get_fips_mode", lambda: 0)() if _hashlib is not None else 0
    if not fips:
        for module in ("_sha2", "_sha256"):
            with contextlib.suppress(ImportError):
                return importlib.import_module(module).sha256  # type: ignore[no-any-return]
    return hashlib.sha256


_SHA256 = _sha256_constructor()


class Hasher:
    """Keyed, stable tokens. The key never leaves this object (not in repr, not in errors).

    HMAC-SHA256 (RFC 2104) with the inner and outer states computed once: OpenSSL's one-shot
    HMAC sets up its context on every call, which costs five times the hashing of a short value.
    """

    __slots__ = ("_inner", "_outer", "key_ref")

    def __init__(self, key: bytes, key_ref: str) -> None:
        if len(key) < 16:
            raise ValueError("the masking HMAC key is shorter than 16 bytes")
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        block = key.ljust(64, b"\0")
        self._inner = _SHA256(bytes(b ^ 0x36 for b in block))
        self._outer = _SHA256(bytes(b ^ 0x5C for b in block))
        self.key_ref = key_ref

    def __call__(self, data: bytes) -> str:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return HMAC_PREFIX + outer.hexdigest()[:_HEX_CHARS]

    def texts(self, values: list[str]) -> list[str]:
        """``self(v.encode())`` for each value: one loop, no call per value (a column)."""
        # Bound once: this loop body runs once per row of a hashed column.
        inner_copy, outer_copy = self._inner.copy, self._outer.copy
        out: list[str] = []
        append = out.append
        for value in values:
            inner = inner_copy()
            inner.update(value.encode("utf-8", "surrogatepass"))
            outer = outer_copy()
            outer.update(inner.digest())
            append(HMAC_PREFIX + outer.hexdigest()[:_HEX_CHARS])
        return out

    def __repr__(self) -> str:
        return f"Hasher(key_ref={self.key_ref!r})"


def as_text(value: Any) -> str:
    """A SQL value as psql prints it (what ``partial`` and ``hash`` work on)."""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    return str(value)


def value_method(method: str, keep_last: int, hasher: Hasher | None) -> Callable[[Any], Any]:
    """The function a column rule applies to each non-NULL value of its columns."""
    if method == "null":
        return lambda _v: None
    if method == "redact":
        return lambda _v: REDACTED
    if method == "partial":
        return lambda v: partial(v if isinstance(v, str) else as_text(v), keep_last)
    if hasher is None:
        raise MaskingError("the hash method needs the masking HMAC key, which is not loaded")

    def hash_value(v: Any) -> str:
        if isinstance(v, str):
            return hasher(v.encode("utf-8", "surrogatepass"))
        if isinstance(v, (bytes, bytearray, memoryview)):
            return hasher(bytes(v))
        return hasher(as_text(v).encode("utf-8"))

    return hash_value


def column_method(
    method: str, keep_last: int, hasher: Hasher | None
) -> Callable[[list[str]], list[Any]]:
    """A column rule applied to a whole column of text values (no NULLs): the fast path."""
    if method == "hash" and hasher is not None:
        return hasher.texts
    if method == "partial":
        return lambda values: _partial_column(values, keep_last)
    one = value_method(method, keep_last, hasher)
    return lambda values: list(map(one, values))


def _partial_column(values: list[str], keep: int) -> list[str]:
    """``partial`` of each value, with the letters and digits starred in one C call."""
    joined = "".join(values)
    if joined.isascii() and joined.isalnum():
        # Every value is ASCII letters and digits only (NUL and '*' are neither), the shape
        # of card numbers and account ids: ``partial`` is then stars for all but the last
        # ``keep`` characters; the lengths decide, not the characters.
        lengths = set(map(len, values))
        if min(lengths) >= 2 * keep:
            if len(lengths) == 1:  # one length (cards of one scheme): no Python per value
                stars = "*" * (lengths.pop() - keep)
                return list(map(stars.__add__, map(itemgetter(slice(-keep, None)), values)))
            prefix = {n: "*" * (n - keep) for n in lengths}
            return [prefix[len(v)] + v[-keep:] for v in values]
    blob = "\x00".join(values)
    masked = blob.translate(_STARS).split("\x00")
    if len(masked) != len(values):  # a value held NUL itself: the slow way
        return [partial(v, keep) for v in values]
    out = []
    for value, stars in zip(values, masked, strict=True):
        tail = value[-keep:]
        cut = len(value) - keep
        # The usual shape (ends in letters or digits, enough of them before): reuse the stars.
        # Only for ASCII values: the translation stars ASCII letters and digits only, and
        # ``partial`` stars every letter and digit (an "ü" before the tail must not stay).
        if (
            value.isascii()
            and tail.isalnum()
            and stars.count("*", 0, cut) - value.count("*", 0, cut) >= keep
        ):
            out.append(stars[:cut] + tail)
        else:
            out.append(partial(value, keep))
    return out


def text_method(method: str, info_type: str, hasher: Hasher | None) -> Callable[[bytes], bytes]:
    """The function a detector applies to each match (UTF-8 bytes in, UTF-8 bytes out)."""
    if method == "redact":
        token = placeholder(info_type).encode()
        return lambda _m: token
    if method == "partial":
        return lambda m: partial(m.decode("utf-8", "replace"), 4).encode()
    if hasher is None:
        raise MaskingError("the hash method needs the masking HMAC key, which is not loaded")
    return lambda m: hasher(m).encode()
