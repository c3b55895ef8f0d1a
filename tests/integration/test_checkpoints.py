"""The checkpoint signer and its Vault key: who may sign, when a checkpoint is due, that two
signers never fork the checkpoint chain, and that the anchor catches up after a failure.

Real Postgres (a database of the test's own) and Vault's transit key; the signer runs
in-process so that the test can drive it record by record.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from support.gateway_support import new_step
from support.ledger_db import drop_db, fresh_gateway_db

from airflow_hoop.devstack import vault_setup
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.gateway.ledger_io.checkpoints import CheckpointSigner
from airflow_hoop.gateway.ledger_io.process_key import ProcessKeys
from airflow_hoop.gateway.settings import CheckpointSettings, GatewaySettings
from airflow_hoop.gateway.vault import GatewayVaultClient
from airflow_hoop.ledger.anchor import DirectoryAnchor
from airflow_hoop.ledger.records import PolicyRefused
from airflow_hoop.ledger.verify import verify_lines

TRANSIT = vault_setup.TRANSIT_MOUNT
KEY = vault_setup.CHECKPOINT_KEY


@pytest.fixture(scope="module")
def ledger_db(stack: StackInfo) -> Iterator[tuple[str, str]]:
    db, dsn = fresh_gateway_db(stack, "hoop_ckpt")
    yield db, dsn
    drop_db(stack, db)


@pytest.fixture
def fresh(stack: StackInfo, ledger_db: tuple[str, str]) -> Iterator[str]:
    """An empty ledger for each test (the superuser truncates it between tests)."""
    db, dsn = ledger_db
    yield dsn
    with psycopg.connect(stack.admin_dsn(db), autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_no_truncate")
        conn.execute("TRUNCATE ledger")
        conn.execute("ALTER TABLE ledger ENABLE ALWAYS TRIGGER ledger_no_truncate")


def run_with(
    stack: StackInfo, dsn: str, body: Callable[[GatewayStore, GatewayVaultClient], Awaitable[Any]]
) -> Any:
    async def main() -> Any:
        store = GatewayStore(dsn)
        vault = GatewayVaultClient(GatewaySettings.load(stack.gateway_settings_path).vault)
        await store.open()
        await vault.login()
        settings = GatewaySettings.load(stack.gateway_settings_path).checkpoints
        keys = ProcessKeys(settings, store, vault)
        await keys.start()  # as the gateway does: every batch under a certified key
        try:
            return await body(store, vault)
        finally:
            await keys.stop()
            await store.close()
            vault.close()

    return asyncio.run(main())


async def append(store: GatewayStore, n: int) -> None:
    step = new_step(dag_id="test_ckpt")
    for i in range(n):
        await store.append(step, step.key, PolicyRefused(connection="c", reason=f"r{i}"))


def lines(stack: StackInfo, dsn: str) -> list[bytes]:
    db = dsn.split("dbname=")[1].split()[0]
    with psycopg.connect(stack.admin_dsn(db)) as conn:
        return [r[0].encode() for r in conn.execute("SELECT body FROM ledger ORDER BY seq")]


def batches(stack: StackInfo, dsn: str) -> list[tuple[int, str]]:
    db = dsn.split("dbname=")[1].split()[0]
    with psycopg.connect(stack.admin_dsn(db)) as conn:
        rows = conn.execute(
            "SELECT seq, batch_sig FROM ledger WHERE batch_sig IS NOT NULL ORDER BY seq"
        )
        return [(r[0], r[1]) for r in rows]


# -- who may sign -----------------------------------------------------------------------------
def test_only_the_gateway_policy_may_sign(stack: StackInfo, bao_root: hvac.Client) -> None:
    digest = base64.b64encode(hashlib.sha256(b"checkpoint").digest()).decode()
    bao_root.sys.create_or_update_policy(
        "ledger-verify-only",
        f'path "{TRANSIT}/verify/{KEY}" {{ capabilities = ["update"] }}\n'
        f'path "{TRANSIT}/keys/{KEY}" {{ capabilities = ["read"] }}\n',
    )
    verifier_token = bao_root.auth.token.create(policies=["ledger-verify-only"], ttl="5m")
    reader = vault_setup.vault_client(stack.bao_addr, verifier_token["auth"]["client_token"])
    step_token = bao_root.auth.token.create(policies=[vault_setup.STEP_ROLE], ttl="5m")
    step = vault_setup.vault_client(stack.bao_addr, step_token["auth"]["client_token"])
    try:
        for client in (reader, step):
            with pytest.raises(hvac.exceptions.Forbidden):
                client.secrets.transit.sign_data(name=KEY, hash_input=digest, mount_point=TRANSIT)
        # The verify-only token may read the public key and verify; the gateway's may sign.
        assert reader.secrets.transit.read_key(name=KEY, mount_point=TRANSIT)["data"]["keys"]
    finally:
        reader.adapter.close()
        step.adapter.close()

    async def sign(_: GatewayStore, vault: GatewayVaultClient) -> tuple[int, str, dict[int, str]]:
        version, signature = await vault.sign_digest(hashlib.sha256(b"checkpoint").digest())
        return version, signature, await vault.checkpoint_public_keys()

    version, signature, keys = asyncio.run(_no_store(stack, sign))
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(keys[version]))
    public.verify(base64.b64decode(signature), hashlib.sha256(b"checkpoint").digest())


async def _public_keys(store: GatewayStore, vault: GatewayVaultClient) -> Any:
    return await CheckpointSigner(CheckpointSettings(), store, vault).public_keys()


async def _no_store(
    stack: StackInfo, body: Callable[[Any, GatewayVaultClient], Awaitable[Any]]
) -> Any:
    vault = GatewayVaultClient(GatewaySettings.load(stack.gateway_settings_path).vault)
    await vault.login()
    try:
        return await body(None, vault)
    finally:
        vault.close()


# -- when a checkpoint is due -------------------------------------------------------------------
def test_every_n_records_or_t_seconds_and_never_for_nothing(stack: StackInfo, fresh: str) -> None:
    async def body(store: GatewayStore, vault: GatewayVaultClient) -> list[Any]:
        signer = CheckpointSigner(
            CheckpointSettings(every_records=5, interval_seconds=1.5), store, vault
        )
        seen = [await signer.checkpoint_now()]  # the key certificate: the first is due at once
        seen.append(await signer.checkpoint_now())  # only its own record since: nothing to do
        await append(store, 3)
        seen.append(await signer.checkpoint_now())  # 3 (+1 checkpoint record) < 5, 1.5 s not over
        await append(store, 2)
        seen.append(await signer.checkpoint_now())  # 5 records since the last one
        seen.append(await signer.checkpoint_now())  # only its own record since: nothing to do
        await append(store, 1)
        await asyncio.sleep(1.6)
        seen.append(await signer.checkpoint_now())  # the interval passed
        return seen

    seen = run_with(stack, fresh, body)
    assert [None if c is None else c.statement.number for c in seen] == [1, None, None, 2, None, 3]
    assert seen[3].statement.first_seq == seen[0].statement.last_seq + 1
    keys = run_with(stack, fresh, _public_keys)
    assert verify_lines(lines(stack, fresh), keys, batches(stack, fresh)).checkpoints == 3


def test_two_signers_never_fork(stack: StackInfo, fresh: str, tmp_path: Path) -> None:
    """Two gateway replicas sign at the same time while records arrive: one chain."""

    async def body(store: GatewayStore, vault: GatewayVaultClient) -> Any:
        settings = CheckpointSettings(every_records=1, anchor_dir=str(tmp_path))
        signers = [CheckpointSigner(settings, store, vault) for _ in range(2)]

        async def sign_often(signer: CheckpointSigner) -> None:
            for _ in range(15):
                await signer.checkpoint_now()

        await asyncio.gather(append(store, 60), *(sign_often(s) for s in signers))
        await signers[0].checkpoint_now(force=True)
        return await signers[0].public_keys()

    keys = run_with(stack, fresh, body)
    result = verify_lines(
        lines(stack, fresh), keys, batches(stack, fresh), anchor=DirectoryAnchor(tmp_path).entries()
    )
    assert result.ok, result.summary()
    assert result.checkpoints >= 3 and result.anchor_matched == result.checkpoints


def test_the_anchor_catches_up_after_a_failed_write(
    stack: StackInfo, fresh: str, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the anchor directory should be")
    good = tmp_path / "anchor"

    async def body(store: GatewayStore, vault: GatewayVaultClient) -> Any:
        signer = CheckpointSigner(CheckpointSettings(every_records=1), store, vault)
        signer.anchor = DirectoryAnchor(blocked / "anchor")
        for _ in range(3):
            await append(store, 2)
            await signer.checkpoint_now()  # ledger: yes; anchor: fails, logged
        signer.anchor = DirectoryAnchor(good)
        await append(store, 2)
        await signer.checkpoint_now()
        return await signer.public_keys()

    keys = run_with(stack, fresh, body)
    assert DirectoryAnchor(good).last_number() == 4
    result = verify_lines(
        lines(stack, fresh), keys, batches(stack, fresh), anchor=DirectoryAnchor(good).entries()
    )
    assert result.ok and result.anchor_matched == 4
