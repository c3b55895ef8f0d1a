"""Signed checkpoints: what is signed, and how a verifier checks a signature offline.

The gateway signs ``SHA-256(canonical(statement))`` with an Ed25519 key held in Vault's transit
engine. Vault's ed25519 signature is plain Ed25519 over those 32 bytes (``prehashed`` is
ignored for ed25519 keys), so a verifier needs nothing but the public key and ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, Field

from airflow_hoop.ledger.canonical import canonical
from airflow_hoop.ledger.records import CheckpointStatement

#: ``prev_checkpoint`` of the first checkpoint.
GENESIS_CHECKPOINT = "00" * 32


def statement_digest(statement: BaseModel | dict[str, Any]) -> bytes:
    """The 32 bytes that are signed: SHA-256 of the statement's canonical JSON.

    Accepts the model or the JSON object exactly as read from a record: canonical encoding of
    the parsed object reproduces the signed bytes, so a verifier never re-serialises a model.
    """
    data = statement.model_dump(mode="json") if isinstance(statement, BaseModel) else statement
    return hashlib.sha256(canonical(data)).digest()


def checkpoint_hash(statement: CheckpointStatement | dict[str, Any]) -> str:
    """Hex digest of a statement: the next checkpoint's ``prev_checkpoint``."""
    return statement_digest(statement).hex()


class KeySource(BaseModel):
    """How a public key was obtained, so a reviewer can judge whether to trust it."""

    how: str = Field(description="e.g. 'read from Vault transit by the gateway'")
    url: str | None = None
    fetched_at: datetime | None = None


class PublicKeySet(BaseModel):
    """The checkpoint key's public halves, by key version (base64 of the raw 32 bytes)."""

    key_name: str
    keys: dict[int, str]
    source: KeySource

    def key(self, version: int) -> Ed25519PublicKey | None:
        raw = self.keys.get(version)
        if raw is None:
            return None
        try:
            return Ed25519PublicKey.from_public_bytes(base64.b64decode(raw, validate=True))
        except (ValueError, binascii.Error):
            return None

    def check(self) -> str | None:
        """None when every key decodes as an Ed25519 public key, else what is wrong."""
        if not self.keys:
            return "the key set holds no key"
        bad = [v for v in self.keys if self.key(v) is None]
        return f"key version(s) {bad} are not Ed25519 public keys" if bad else None


def signature_valid(checkpoint: dict[str, Any], keys: PublicKeySet) -> bool:
    """Does the checkpoint body (a record's ``body`` object) carry a valid signature?"""
    try:
        statement = checkpoint["statement"]
        version = int(checkpoint["key_version"])
        signature = base64.b64decode(checkpoint["signature"], validate=True)
        if checkpoint.get("key_name") != keys.key_name:
            return False
        key = keys.key(version)
        if key is None:
            return False
        key.verify(signature, statement_digest(statement))
    except (KeyError, TypeError, ValueError, binascii.Error, InvalidSignature):
        return False
    return True


def split_vault_signature(value: str) -> tuple[int, str]:
    """``vault:v3:<b64>`` -> (3, "<b64>")."""
    parts = value.split(":")
    if len(parts) != 3 or parts[0] != "vault" or not parts[1].startswith("v"):
        raise ValueError("not a Vault transit signature")
    return int(parts[1][1:]), parts[2]
