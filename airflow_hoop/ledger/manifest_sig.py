"""The bundle manifest's signature: a gateway process vouches for a manifest of its ledger.

The exporter asks the gateway to sign the SHA-256 of ``manifest.json`` together with where
the bundle's records end (``last_seq`` and the chain hash there). The gateway signs only if
that hash is its ledger's hash at that seq, with its certified process key (``batch.py``);
the bundle carries the signature in ``manifest.sig`` and the key's certificate in
``keys.jsonl``. A verifier checks the certificate against Vault's checkpoint key, the
signature, that it signs this very manifest, and that the records it verified end on that
hash. The manifest states what the report was rendered from, so the verifier renders the
report itself and compares: no word of the bundle's prose is trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field

from airflow_hoop.ledger.batch import CertifiedKeys
from airflow_hoop.ledger.canonical import canonical

MANIFEST_SIG = "manifest.sig"


class ManifestStatement(BaseModel):
    """What a manifest signature signs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    purpose: Literal["bundle manifest"] = "bundle manifest"
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    last_seq: int = Field(ge=0, description="the bundle's last record")
    end_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="the chain hash at last_seq")
    key_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    signed_at: datetime
    signed_for: str = Field(description="the API key that asked (its name)")


class SignedManifest(BaseModel):
    """``manifest.sig``: the statement and the process key's Ed25519 signature of it."""

    model_config = ConfigDict(extra="forbid")

    statement: ManifestStatement
    signature: str = Field(description="base64 Ed25519 over SHA-256(canonical(statement))")


class ManifestSignRequest(BaseModel):
    """``POST /api/airflow-hoop/ledger/manifest-signature``."""

    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    last_seq: int = Field(ge=0)
    end_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


def _digest(statement: ManifestStatement) -> bytes:
    return hashlib.sha256(canonical(statement.model_dump(mode="json"))).digest()


def sign_manifest(private: Ed25519PrivateKey, statement: ManifestStatement) -> SignedManifest:
    signature = private.sign(_digest(statement))
    return SignedManifest(statement=statement, signature=base64.b64encode(signature).decode())


def manifest_problem(
    signed: SignedManifest,
    manifest_bytes: bytes,
    keys: CertifiedKeys,
    last_seq: int | None,
    end_hash: str | None,
) -> str | None:
    """None when ``signed`` is a valid signature of this manifest by a certified gateway key
    valid at its time, for records ending at ``last_seq`` on ``end_hash``; else why not."""
    st = signed.statement
    if st.manifest_sha256 != hashlib.sha256(manifest_bytes).hexdigest():
        return "manifest.json is not the manifest the gateway signed (it was changed)"
    key = keys.get(st.key_id)
    if key is None:
        return (
            f"the manifest is signed by key {st.key_id}, which no certificate in keys.jsonl names"
        )
    if not key.valid_at(st.signed_at):
        return f"the manifest was signed by {key.describe()} outside its validity"
    try:
        key.public.verify(base64.b64decode(signed.signature, validate=True), _digest(st))
    except (InvalidSignature, ValueError, binascii.Error):
        return f"the manifest's signature by {key.describe()} does not verify"
    if (st.last_seq, st.end_hash) != (last_seq, end_hash):
        return (
            f"the gateway signed a bundle ending at seq {st.last_seq}; the records end at seq "
            f"{last_seq}"
        )
    return None
