"""Which steps ended, and which gateway process holds each live step, as this process knows.

The table (``gateway_steps``, db/step_claims.py) is the truth across replicas; this class keeps
the ended steps this process has seen (its own ends, the step-end bus's NOTIFYs, the table's
recent ends) so that most refusals need no round trip, and claims a step in the table before
its first credential is minted: an ended step or one another process holds is refused in the
same statement (docs/security.md).
"""

from __future__ import annotations

import time

from airflow_hoop.errors import StepElsewhereError, StepEndedError
from airflow_hoop.gateway.db.step_claims import StepClaims, record_step_refusal
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.ledger.records import StepRef

#: Ended steps loaded at start and on each reconnect of the step-end bus: no identity token
#: lives longer (Vault's identity tokens live minutes); older ones are checked in the table.
ENDED_WINDOW_SECONDS = 86_400.0


class StepTenure:
    """Ended steps and step owners: refuses a step's requests after its end or elsewhere."""

    def __init__(self, store: GatewayStore) -> None:
        self.store = store
        #: The ``gateway_steps`` table: ended steps and which process holds each live step.
        self.claims = StepClaims(store)
        #: Ended steps known here and when they ended (own ends, the step-end bus, the table
        #: at start): tokens issued before are refused without a round trip.
        self.ended: dict[str, float] = {}

    def ended_for(self, step: StepRef, issued_at: float) -> bool:
        """True when the step ended after (or when) the caller's token was issued."""
        ended = self.ended.get(step.key)
        return ended is not None and issued_at <= ended

    async def claim(self, step: StepRef, connection: str, issued_at: float) -> None:
        """Claim ``step`` for this process, before any credential is minted for it.

        Raises StepEndedError (401) for an ended step and StepElsewhereError (409) for a step
        another gateway process holds, each recorded.
        """
        if self.ended_for(step, issued_at):
            await self.record_refusal(step, connection, "step ended")
            raise self.refused_ended(step)
        claim = await self.claims.claim(step.key, issued_at)
        if claim.outcome == "owned":
            return
        if claim.outcome == "ended":
            self.ended.setdefault(step.key, issued_at)
            await self.record_refusal(step, connection, "step ended")
            raise self.refused_ended(step)
        owner = claim.owner or "unknown"
        reason = f"step held by gateway process {owner}"
        await self.record_refusal(step, connection, reason)
        raise StepElsewhereError(
            f"step {step.key} is held by gateway process {owner} (this is {self.claims.me}); "
            "nothing ran here",
            owner,
        )

    def refused_ended(self, step: StepRef) -> StepEndedError:
        return StepEndedError(f"step {step.key} has ended; its identity token is refused")

    async def record_refusal(self, step: StepRef, connection: str, reason: str) -> None:
        """A ``policy.refused`` record for a step this process refuses (logged if it fails)."""
        await record_step_refusal(self.store, step, connection, reason)

    # -- ended steps -------------------------------------------------------------------------
    async def mark_ended(self, step: StepRef) -> None:
        """The step ended: in the table first (every process, now or later), then here."""
        self.note_end(step)
        await self.claims.end(step.key)

    def note_end(self, step: StepRef) -> None:
        # Our clock, not the database's: a token the resumed task gets later is newer still.
        self.ended[step.key] = max(self.ended.get(step.key, 0.0), time.time())

    async def load_ended(self) -> None:
        """The ended steps of the table (at start, and whenever NOTIFYs may have been missed)."""
        for key, ended_at in (await self.claims.ended_since(ENDED_WINDOW_SECONDS)).items():
            self.ended[key] = max(self.ended.get(key, 0.0), ended_at)
