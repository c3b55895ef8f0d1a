"""This gateway process's ledger key: made at start, certified by Vault, renewed in time.

The private key is made in memory (``cryptography``'s Ed25519) and never written anywhere:
not to the database, not to disk, not to a log. Vault's transit checkpoint key signs its
certificate (key id, public key, process, replica, validity), which is appended as a
``gateway.key`` record in a batch signed by the new key itself; from that batch on the
appender signs with it (``db/appender.py``). Halfway through a key's validity a new one is
made and certified the same way, so no batch is ever signed by an expired key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from airflow_hoop.errors import HoopError
from airflow_hoop.gateway.db.batch_signer import ProcessKey
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.gateway.settings import CheckpointSettings
from airflow_hoop.gateway.vault import GatewayVaultClient
from airflow_hoop.ledger.batch import key_id, public_raw
from airflow_hoop.ledger.checkpoint import KeySource, PublicKeySet, statement_digest
from airflow_hoop.ledger.records import GatewayKeyCertified, KeyCertificateStatement

log = logging.getLogger(__name__)

#: A certificate starts this much before it is made (the clocks of a batch and of its
#: certificate are the same process's, so this only absorbs rounding).
_BACKDATE = timedelta(seconds=5)
#: Seconds between attempts to certify the first key while Vault refuses.
_RETRY = 5.0


class ProcessKeys:
    """Certifies this process's batch keys: ``start`` before anything is appended."""

    def __init__(
        self, settings: CheckpointSettings, store: GatewayStore, vault: GatewayVaultClient
    ) -> None:
        self.settings = settings
        self.store = store
        self.vault = vault
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Certify the first key, then renew in the background. If Vault cannot certify it
        now, the gateway starts all the same and retries: until a key is certified every
        append fails (503, ``BatchSigner.sign``), so nothing is recorded unsigned and no
        command runs without its record."""
        try:
            await self._certify_first()
        except HoopError as exc:
            log.error("ledger key not certified (retrying every %s s): %s", _RETRY, exc)
            self._task = asyncio.create_task(self._retry_then_loop(), name="ledger-key")
            return
        self._task = asyncio.create_task(self._loop(), name="ledger-key-renewal")

    async def _certify_first(self) -> None:
        cfg = self.vault.settings
        self.store.signer.set_vault_keys(
            PublicKeySet(
                key_name=cfg.checkpoint_key,
                keys=await self.vault.checkpoint_public_keys(),
                source=KeySource(how="read by the gateway from Vault's transit engine"),
            )
        )
        await self.renew()

    async def _retry_then_loop(self) -> None:
        while True:
            await asyncio.sleep(_RETRY)
            try:
                await self._certify_first()
                break
            except HoopError as exc:
                log.error("ledger key not certified (retrying): %s", exc)
        await self._loop()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def renew(self) -> KeyCertificateStatement:
        """Make a key, have Vault certify it, append the certificate; sign with it from then."""
        private = Ed25519PrivateKey.generate()
        raw = public_raw(private)
        now = datetime.now(timezone.utc)
        statement = KeyCertificateStatement(
            key_id=key_id(raw),
            public_key=base64.b64encode(raw).decode("ascii"),
            process=self.store.instance_id,
            replica=self.settings.replica or socket.gethostname(),
            not_before=now - _BACKDATE,
            not_after=now + timedelta(seconds=self.settings.key_validity_seconds),
        )
        version, signature = await self.vault.sign_digest(statement_digest(statement))
        certificate = GatewayKeyCertified(
            statement=statement,
            key_name=self.vault.settings.checkpoint_key,
            key_version=version,
            signature=signature,
        )
        await self.store.install_key(ProcessKey(private, statement.key_id), certificate)
        log.info("ledger key %s certified until %s", statement.key_id, statement.not_after)
        return statement

    async def _loop(self) -> None:
        period = self.settings.key_validity_seconds / 2
        while True:
            await asyncio.sleep(period)
            while True:
                try:
                    await self.renew()
                    break
                except HoopError as exc:
                    # The current key stays valid for the other half: retry well before.
                    log.error("ledger key not renewed (retrying in 60 s): %s", exc)
                    await asyncio.sleep(min(60.0, period / 4))
