"""Batch signatures: proof that a certified gateway process wrote a run of records.

Each gateway process makes an Ed25519 key at start and never stores its private half. Vault's
transit checkpoint key certifies the public half once (a ``gateway.key`` record naming the
process, its replica and the key's validity). Every group-commit batch ``first..last`` is then
signed with the process key over::

    "airflow-hoop ledger batch v1" NUL key_id NUL first NUL last NUL hash(last)

``hash(last)`` is the chain hash at the batch's end, which covers every record before it: a
signed batch copied to another place in the chain (or into another ledger) no longer ends on
that hash, and a record inserted by anyone without the key is covered by no signature.

The signature is stored on the batch's last row (column ``batch_sig``, outside the hashed
record) as ``<key_id>.<first>.<base64 signature>``; bundles carry it in ``batches.jsonl``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import ValidationError

from airflow_hoop.ledger.checkpoint import PublicKeySet, signature_valid
from airflow_hoop.ledger.records import GatewayKeyCertified, KeyCertificateStatement

#: What every failure of this kind says (the issue's wording, so operators can grep it).
NOT_SIGNED = "record not signed by a certified gateway key"
_DOMAIN = b"airflow-hoop ledger batch v1\x00"


def key_id(public_raw: bytes) -> str:
    """A key's id: the first 32 hex digits of SHA-256 of its raw 32 bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:32]


def public_raw(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def batch_message(kid: str, first_seq: int, last_seq: int, head_hash: str) -> bytes:
    """The bytes a batch signature signs."""
    return _DOMAIN + f"{kid}\x00{first_seq}\x00{last_seq}\x00{head_hash}".encode("ascii")


def sign_batch(
    private: Ed25519PrivateKey, kid: str, first_seq: int, last_seq: int, head_hash: str
) -> str:
    """The ``batch_sig`` text of a batch."""
    signature = private.sign(batch_message(kid, first_seq, last_seq, head_hash))
    return f"{kid}.{first_seq}.{base64.b64encode(signature).decode('ascii')}"


class BatchSig(NamedTuple):
    key_id: str
    first_seq: int
    signature: bytes


def parse_batch_sig(text: str) -> BatchSig | None:
    """``<key_id>.<first>.<b64>`` or None when it is not one."""
    parts = text.split(".")
    if len(parts) != 3 or len(parts[0]) != 32:
        return None
    try:
        first = int(parts[1])
        signature = base64.b64decode(parts[2], validate=True)
    except (ValueError, binascii.Error):
        return None
    return BatchSig(parts[0], first, signature) if len(signature) == 64 else None


class CertifiedKey(NamedTuple):
    statement: KeyCertificateStatement
    public: Ed25519PublicKey

    def describe(self) -> str:
        st = self.statement
        return f"key {st.key_id} (process {st.process}, replica {st.replica})"

    def valid_at(self, when: datetime) -> bool:
        return self.statement.not_before <= when <= self.statement.not_after

    def verifies(self, sig: BatchSig, last_seq: int, head_hash: str) -> bool:
        message = batch_message(sig.key_id, sig.first_seq, last_seq, head_hash)
        try:
            self.public.verify(sig.signature, message)
        except InvalidSignature:
            return False
        return True


class CertifiedKeys:
    """Gateway keys whose certificates verify against Vault's checkpoint key, by key id."""

    def __init__(self, vault_keys: PublicKeySet | None) -> None:
        self.vault_keys = vault_keys
        self._keys: dict[str, CertifiedKey] = {}

    def __contains__(self, kid: str) -> bool:
        return kid in self._keys

    def get(self, kid: str) -> CertifiedKey | None:
        return self._keys.get(kid)

    def add(self, body: dict[str, Any]) -> str | None:
        """Register a certificate (a ``gateway.key`` record's body); None, or what is wrong."""
        try:
            cert = GatewayKeyCertified.model_validate(body)
            raw = base64.b64decode(cert.statement.public_key, validate=True)
            public = Ed25519PublicKey.from_public_bytes(raw)
        except (ValidationError, ValueError, binascii.Error):
            return "the key certificate is malformed"
        st = cert.statement
        if key_id(raw) != st.key_id:
            return f"the certificate of key {st.key_id} names a public key of another id"
        if self.vault_keys is None or not signature_valid(body, self.vault_keys):
            name = self.vault_keys.key_name if self.vault_keys else "(no key)"
            return (
                f"the certificate of key {st.key_id} (process {st.process}) does not verify "
                f"against Vault's {name}: a forged key certificate"
            )
        self._keys[st.key_id] = CertifiedKey(st, public)
        return None

    def check(
        self, sig: BatchSig, last_seq: int, head_hash: str, last_time: datetime | None
    ) -> str | None:
        """None when ``sig`` is a valid signature of batch ``sig.first_seq..last_seq`` by a
        certified key valid at ``last_time``; else why not (after ``NOT_SIGNED``)."""
        problem = self.precheck(sig, last_seq, last_time)
        if problem is not None:
            return problem
        key = self._keys[sig.key_id]
        if not key.verifies(sig, last_seq, head_hash):
            return bad_signature(sig, last_seq)
        return None

    def precheck(self, sig: BatchSig, last_seq: int, last_time: datetime | None) -> str | None:
        """The checks that need no signature verification: certified, and valid then."""
        key = self._keys.get(sig.key_id)
        span = f"batch {sig.first_seq}..{last_seq}"
        if key is None:
            return f"{span} is signed by key {sig.key_id}, which no valid certificate names"
        if last_time is None or not key.valid_at(last_time):
            st = key.statement
            return (
                f"{span} is signed by {key.describe()}, valid {st.not_before.isoformat()} to "
                f"{st.not_after.isoformat()}, but is dated "
                f"{last_time.isoformat() if last_time else 'without a time'}: an expired key"
            )
        return None


def bad_signature(sig: BatchSig, last_seq: int) -> str:
    return (
        f"the signature of batch {sig.first_seq}..{last_seq} by key {sig.key_id} does not "
        "verify: records changed, or a signed batch replayed at another place"
    )


def parse_time(value: Any) -> datetime | None:
    """A record's stated time (ISO 8601 text) as an aware datetime; None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None
