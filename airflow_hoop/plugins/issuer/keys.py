"""The issuer's signing key: an Ed25519 file only its user may read, and its JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from airflow_hoop.errors import ConfigError


@dataclass(frozen=True)
class IssuerKey:
    """The private key and its public JWK (``kid`` is the RFC 7638 thumbprint)."""

    private: ed25519.Ed25519PrivateKey
    kid: str
    jwk: dict[str, str]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public: ed25519.Ed25519PublicKey) -> dict[str, str]:
    """The OKP JWK of an Ed25519 public key, with its RFC 7638 thumbprint as ``kid``."""
    x = _b64url(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    thumbprint_input = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True
    )
    kid = _b64url(hashlib.sha256(thumbprint_input.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}


def load_key(path: str | Path) -> IssuerKey:
    """Load the key, refusing a file another user could read or that someone else owns."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the issuer key {path}: {exc.strerror}",
            f"create it: (umask 077; openssl genpkey -algorithm ed25519 -out {path})",
        ) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the issuer key {path} has mode {stat.S_IMODE(info.st_mode):04o}: others may read "
            "it, and whoever reads it can mint any step's identity",
            f"chmod 600 {path}, and rotate the key if it was exposed",
        )
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"the issuer key {path} belongs to uid {info.st_uid}, not to the issuer's user "
            f"(uid {os.geteuid()})",
            "chown the key to the user that runs the API server (or the standalone issuer)",
        )
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"the issuer key {path} is not Ed25519", "generate an Ed25519 key")
    jwk = public_jwk(key.public_key())
    return IssuerKey(private=key, kid=jwk["kid"], jwk=jwk)


def write_key(path: str | Path) -> dict[str, Any]:
    """A new Ed25519 key at ``path``, 0600 from its creation; returns the public JWK."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return public_jwk(key.public_key())
