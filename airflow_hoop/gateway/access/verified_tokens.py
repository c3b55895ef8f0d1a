"""Identity tokens whose signature was already checked, so each request re-checks only expiry.

A step sends the same Vault identity token with every statement. Checking its signature
(JWKS lookup, base64, Ed25519/RSA verify, claims validation) costs about half a millisecond
per request; the outcome cannot change while the token is unexpired and its signing key is
still published. So the first successful verification is remembered, keyed by the token's
SHA-256, and later requests only compare ``exp`` (with the same leeway) to the clock.

An entry is forgotten after ``max_age_seconds`` (the JWKS cache period): a signing key that
Vault stops publishing stops being honoured no later than it did without this cache.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from airflow_hoop.ledger.records import StepRef

#: Enough for every step of a busy gateway; the oldest entries go first.
DEFAULT_MAX_ENTRIES = 4096


class _Entry:
    __slots__ = ("entity_id", "expires_at", "issued_at", "step", "verified_at")

    def __init__(
        self, step: StepRef, expires_at: float, issued_at: float, verified_at: float, entity_id: str
    ) -> None:
        self.step, self.expires_at, self.verified_at = step, expires_at, verified_at
        self.issued_at, self.entity_id = issued_at, entity_id


class VerifiedTokens:
    """A bounded map of verified identity tokens to the step they name and their ``exp``."""

    def __init__(self, max_age_seconds: float, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_age_seconds = max_age_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def remember(
        self, token: str, step: StepRef, expires_at: float, issued_at: float, entity_id: str = ""
    ) -> None:
        """Record a token that passed full verification (signature, issuer, audience, claims)."""
        key = _key(token)
        self._entries[key] = _Entry(step, expires_at, issued_at, time.monotonic(), entity_id)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def lookup(self, token: str) -> tuple[StepRef, float, float, str] | None:
        """(step, exp, iat, sub) of a remembered token, or None when it must be verified in full.

        The caller still checks ``exp`` against the clock: expiry is never cached.
        """
        key = _key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry.verified_at > self.max_age_seconds:
            del self._entries[key]
            return None
        return entry.step, entry.expires_at, entry.issued_at, entry.entity_id

    def forget(self, token: str) -> None:
        self._entries.pop(_key(token), None)

    def __len__(self) -> int:
        return len(self._entries)


def _key(token: str) -> bytes:
    # A digest, not the token: the map never holds a usable credential.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
