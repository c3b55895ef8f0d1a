"""VaultTokenLiveness's rules, against a stand-in for Vault's lookup-accessor (the real Vault
case is tests/integration/test_step_registry.py): when it asks, what it refuses, and what a
Vault outage does to a confirmed and to an unconfirmed token."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_hoop.errors import GatewayAuthError, VaultError
from airflow_hoop.gateway.access.token_liveness import VaultTokenLiveness
from airflow_hoop.gateway.vault import TokenLookup
from airflow_hoop.ledger.records import StepRef

STEP = StepRef(dag_id="d", task_id="t", run_id="r", try_number=2)
META = {"dag_id": "d", "task_id": "t", "run_id": "r", "try_number": "2", "map_index": "-1"}


class Vault:
    """Answers lookups from a dict; ``down`` makes every lookup fail as unreachable."""

    def __init__(self) -> None:
        self.tokens: dict[str, TokenLookup] = {"acc": TokenLookup(entity_id="ent", meta=META)}
        self.calls = 0
        self.down = False

    async def lookup_accessor(self, accessor: str) -> TokenLookup | None:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.down:
            raise VaultError("cannot reach Vault", "start Vault")
        return self.tokens.get(accessor)


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_asks_once_per_window_and_again_after_it() -> None:
    vault = Vault()
    live = VaultTokenLiveness(vault, recheck_seconds=0.2)

    async def go() -> None:
        for _ in range(5):
            await live.check(STEP, "ent", "acc")
        assert vault.calls == 1
        await asyncio.sleep(0.25)
        await live.check(STEP, "ent", "acc")
        assert vault.calls == 2

    run(go())


def test_concurrent_requests_share_one_lookup() -> None:
    vault = Vault()
    live = VaultTokenLiveness(vault, recheck_seconds=1.0)

    async def go() -> None:
        await asyncio.gather(*(live.check(STEP, "ent", "acc") for _ in range(20)))
        assert vault.calls == 1

    run(go())


def test_zero_window_asks_every_time() -> None:
    vault = Vault()
    live = VaultTokenLiveness(vault, recheck_seconds=0)

    async def go() -> None:
        for _ in range(3):
            await live.check(STEP, "ent", "acc")
        assert vault.calls == 3

    run(go())


def test_a_revoked_token_is_refused_once_the_window_passed() -> None:
    vault = Vault()
    live = VaultTokenLiveness(vault, recheck_seconds=0.1)

    async def go() -> None:
        await live.check(STEP, "ent", "acc")
        del vault.tokens["acc"]  # revoked out of band
        await asyncio.sleep(0.15)
        with pytest.raises(GatewayAuthError, match="revoked or expired"):
            await live.check(STEP, "ent", "acc")

    run(go())


@pytest.mark.parametrize(
    ("entity", "meta", "accessor", "match"),
    [
        ("other-entity", META, "acc", "is not step"),
        ("ent", {**META, "try_number": "1"}, "acc", "is not step"),
        ("ent", {**META, "run_id": "another"}, "acc", "is not step"),
        ("ent", META, None, "X-Hoop-Vault-Accessor"),
        ("ent", META, "", "X-Hoop-Vault-Accessor"),
        ("ent", META, "unknown", "revoked or expired"),
    ],
)
def test_refusals(entity: str, meta: dict[str, str], accessor: str | None, match: str) -> None:
    vault = Vault()
    vault.tokens["acc"] = TokenLookup(entity_id="ent", meta=meta)
    live = VaultTokenLiveness(vault, recheck_seconds=1.0)
    with pytest.raises(GatewayAuthError, match=match):
        run(live.check(STEP, entity, accessor))


def test_login_without_step_fields_is_bound_by_entity_only() -> None:
    vault = Vault()
    vault.tokens["acc"] = TokenLookup(entity_id="ent", meta={"role_name": "airflow"})
    run(VaultTokenLiveness(vault, 1.0).check(STEP, "ent", "acc"))


def test_a_token_past_its_ttl_is_refused_without_asking() -> None:
    vault = Vault()
    vault.tokens["acc"] = TokenLookup(entity_id="ent", meta=META, ttl=1)
    live = VaultTokenLiveness(vault, recheck_seconds=60)

    async def go() -> None:
        await live.check(STEP, "ent", "acc")
        await asyncio.sleep(1.05)
        with pytest.raises(GatewayAuthError, match="has expired"):
            await live.check(STEP, "ent", "acc")
        assert vault.calls == 1

    run(go())


def test_vault_down_fails_closed_for_an_unconfirmed_token() -> None:
    vault = Vault()
    vault.down = True
    with pytest.raises(VaultError):
        run(VaultTokenLiveness(vault, 1.0).check(STEP, "ent", "acc"))


def test_vault_down_keeps_a_confirmed_token_running() -> None:
    vault = Vault()
    live = VaultTokenLiveness(vault, recheck_seconds=0.05)

    async def go() -> None:
        await live.check(STEP, "ent", "acc")
        vault.down = True
        await asyncio.sleep(0.06)
        started = time.monotonic()
        await live.check(STEP, "ent", "acc")  # asked, failed, honoured on the last answer
        assert vault.calls == 2 and time.monotonic() - started < 1
        await live.check(STEP, "ent", "acc")  # within the new window: not asked
        assert vault.calls == 2
        with pytest.raises(GatewayAuthError, match="is not step"):
            await live.check(STEP, "another-entity", "acc")

    run(go())
