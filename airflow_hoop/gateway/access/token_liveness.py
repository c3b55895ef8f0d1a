"""A step's requests die with its Vault token: revoked out of band, expired, or never shown.

The step's identity token is a JWT Vault signed; revoking the step's Vault token does not
unsign it, and Vault offers no lookup from an identity token to the token that requested it.
So each request of a step also names that Vault token by its *accessor* (header
``X-Hoop-Vault-Accessor``; an accessor can look a token up, never act as it), and the gateway
asks Vault about it (``auth/token/lookup-accessor``, gateway policy):

- the token must exist (a revoked or expired token has no accessor any more);
- it must belong to the identity token's entity (``sub``), so the accessor of another live
  login cannot stand in; with JWT auth every step is an entity of its own, and the token's
  login metadata must name the same step where it carries step fields;
- the answer is trusted for ``vault.token_recheck_seconds`` (default 1 s; 0: every request),
  so a step's statements do not each wait for Vault. Within that window after an out-of-band
  revocation a request can still pass; after it, every request is refused (401, recorded) and
  no credential is minted (this check runs before any). docs/security.md.

Vault unreachable while the answer is due: a token Vault never confirmed fails closed (503,
nothing runs); one it confirmed alive keeps its step running until the token's own expiry, as
the step's database user does during an outage (docs/faults.md): a revocation Vault could not
tell the gateway of is honoured once Vault answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Protocol

from airflow_hoop.errors import GatewayAuthError, VaultError, VaultTokenGoneError
from airflow_hoop.gateway.vault import TokenLookup
from airflow_hoop.ledger.records import StepRef

log = logging.getLogger(__name__)

#: Enough for every live step of a busy gateway; the oldest entries go first.
_MAX_ENTRIES = 4096
#: Login metadata keys that name the step (JWT auth's claim_mappings, vault_setup.py).
_STEP_META = ("dag_id", "task_id", "run_id", "try_number", "map_index")


class AccessorLookup(Protocol):
    """The gateway's Vault client: None when Vault knows no live token with this accessor."""

    async def lookup_accessor(self, accessor: str) -> TokenLookup | None: ...


class _Known:
    __slots__ = ("checked_at", "entity_id", "expires_at", "meta")

    def __init__(self, found: TokenLookup, checked_at: float) -> None:
        self.entity_id, self.meta, self.checked_at = found.entity_id, found.meta, checked_at
        self.expires_at = checked_at + found.ttl if found.ttl > 0 else float("inf")


class VaultTokenLiveness:
    """Refuses a step's request unless the Vault token it names is alive and the step's own."""

    def __init__(self, vault: AccessorLookup, recheck_seconds: float) -> None:
        self._vault = vault
        self.recheck_seconds = recheck_seconds
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._pending: dict[str, asyncio.Future[TokenLookup | None]] = {}

    async def check(self, step: StepRef, entity_id: str, accessor: str | None) -> None:
        """Raise GatewayAuthError (401) unless ``accessor`` names a live token of the step."""
        if not accessor:
            raise GatewayAuthError(
                "the request names no Vault token (header X-Hoop-Vault-Accessor)",
                "send the step's Vault token accessor with its identity token (airflow-hoop's "
                "client does); a step's requests are honoured only while that token lives",
            )
        now = time.monotonic()
        known = self._known.get(accessor)
        if known is None or now - known.checked_at >= self.recheck_seconds:
            try:
                found = await self._lookup(accessor)
            except VaultError:
                if known is None or known.expires_at <= now:
                    raise  # never confirmed: fail closed (503, nothing runs)
                # Vault unreachable: a token it confirmed alive keeps its step running, as
                # the step's database user does (docs/faults.md); asked again next window.
                log.warning("Vault unreachable: step %s runs on its last confirmation", step.key)
                known.checked_at = time.monotonic()
                return self._belongs(known, step, entity_id)
            if found is None:
                self._known.pop(accessor, None)
                raise VaultTokenGoneError(
                    f"the Vault token of step {step.key} is revoked or expired"
                )
            known = _Known(found, time.monotonic())
            self._known[accessor] = known
            self._known.move_to_end(accessor)
            while len(self._known) > _MAX_ENTRIES:
                self._known.popitem(last=False)
        if known.expires_at <= now:
            raise VaultTokenGoneError(f"the Vault token of step {step.key} has expired")
        self._belongs(known, step, entity_id)

    @staticmethod
    def _belongs(known: _Known, step: StepRef, entity_id: str) -> None:
        if known.entity_id != entity_id or not _meta_names(known.meta, step):
            raise GatewayAuthError(
                f"the Vault token named by X-Hoop-Vault-Accessor is not step {step.key}'s",
                "send the accessor of the Vault token that fetched this identity token",
            )

    def forget(self, accessor: str) -> None:
        self._known.pop(accessor, None)

    async def _lookup(self, accessor: str) -> TokenLookup | None:
        # Concurrent requests of one step wait for one lookup, not one each.
        pending = self._pending.get(accessor)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[TokenLookup | None] = asyncio.get_running_loop().create_future()
        self._pending[accessor] = future
        try:
            found = await self._vault.lookup_accessor(accessor)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(found)
            return found
        finally:
            self._pending.pop(accessor, None)


def _meta_names(meta: dict[str, str], step: StepRef) -> bool:
    """Where the login metadata names a step, it names this one (AppRole/token: no fields)."""
    want = {
        "dag_id": step.dag_id,
        "task_id": step.task_id,
        "run_id": step.run_id,
        "try_number": str(step.try_number),
        "map_index": str(step.map_index),
    }
    return all(meta[key] == want[key] for key in _STEP_META if key in meta)
