"""The gateway's masking: one compiled engine per connection policy, HMAC keys from Vault.

A policy that hashes needs its key before the command runs: if Vault cannot give it, the
command is refused (nothing ran), never run unmasked. Keys are KV v2 secrets
``<masking_kv_mount>/<masking_key_path>/<hmac_key>`` with a ``key`` field (base64 or hex, at
least 16 bytes), re-read every ``masking_key_cache_seconds`` so a rotated key takes effect.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Protocol

from airflow_hoop.errors import VaultError
from airflow_hoop.gateway.masking.engine import MaskingEngine, ResultMasker
from airflow_hoop.gateway.masking.methods import Hasher
from airflow_hoop.gateway.masking.rules import MaskingPolicy


class KeySource(Protocol):
    async def read_masking_key(self, name: str) -> tuple[str, int]: ...


class MaskingService:
    """Hands out a ``ResultMasker`` per command of a connection that has a masking policy."""

    def __init__(
        self,
        keys: KeySource,
        *,
        key_cache_seconds: float = 300.0,
        key_location: str = "secret/airflow-hoop/masking",
    ) -> None:
        self._keys = keys
        self._where = key_location
        self._ttl = key_cache_seconds
        self._hashers: dict[str, tuple[Hasher, float]] = {}
        self._engines: dict[tuple[str, str | None], MaskingEngine] = {}
        self._lock = asyncio.Lock()

    async def masker(self, policy: MaskingPolicy | None) -> ResultMasker | None:
        """A fresh masker for one command, or None when the connection has no policy."""
        if policy is None:
            return None
        hasher = await self._hasher(policy.hmac_key) if policy.uses_hash else None
        key = (policy.version, hasher.key_ref if hasher else None)
        engine = self._engines.get(key)
        if engine is None:
            engine = MaskingEngine(policy, hasher)
            self._engines[key] = engine
        masker = engine.start()
        masker.unmasked_to_task = policy.allow_unmasked_to_task
        return masker

    async def _hasher(self, name: str) -> Hasher:
        cached = self._hashers.get(name)
        if cached is not None and time.monotonic() - cached[1] < self._ttl:
            return cached[0]
        async with self._lock:
            cached = self._hashers.get(name)
            if cached is not None and time.monotonic() - cached[1] < self._ttl:
                return cached[0]
            try:
                encoded, version = await self._keys.read_masking_key(name)
            except VaultError as exc:
                raise VaultError(
                    f"the masking policy needs HMAC key {name!r}, which could not be read "
                    f"({exc.what}); nothing was executed",
                    f"write it (bao kv put {self._where}/{name} key=$(openssl rand -hex 32)) "
                    f"and let the gateway's token read {self._where}/{name}",
                ) from None
            hasher = Hasher(_decode_key(name, encoded, self._where), f"{name} v{version}")
            self._hashers[name] = (hasher, time.monotonic())
            return hasher


def _decode_key(name: str, encoded: str, where: str) -> bytes:
    text = encoded.strip()
    key: bytes | None = None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            key = None
    if key is None or len(key) < 16:
        raise VaultError(
            f"masking key {name!r} in Vault is not hex or base64 of at least 16 bytes; "
            "nothing was executed",
            f"write a random key: bao kv put {where}/{name} key=$(openssl rand -hex 32)",
        )
    return key
