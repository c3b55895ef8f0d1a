"""SIGHUP: the gateway re-reads its settings file and applies its connections, no restart.

What a reload may change is the policy: ``connections`` (which DAGs may use each, approval
rules, masking, session settings, new connections). Everything else (listener, TLS, database,
Vault, API keys, limits) is wired into objects built at start-up; a file that changes any of it
is refused as a whole, so the process never runs half old, half new settings.

Order: read and validate the whole file exactly as at start-up (``GatewaySettings.load``),
compare, record the change in the ledger (``gateway.settings_changed`` with the digest of the
new settings), and only then swap the connections in. A bad file, a change that needs a
restart, or a ledger that cannot record keeps the old settings; the log says why.

Who can reload: whoever may signal the gateway's process (its user or root) and has written
the file (0600, the gateway's user). No HTTP route reloads; a shell step runs in its own PID
namespace (bubblewrap) and cannot see the gateway's process to signal it. (Under ``sandbox:
none`` as the gateway's own user a command could send the signal: it would only re-apply the
file the administrators wrote, and a change would be recorded.)

Multi-worker mode (``--workers N``): uvicorn's supervisor receives the SIGHUP and restarts the
workers, each of which loads (and validates) the file as at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from airflow_hoop.errors import ConfigError, LedgerError
from airflow_hoop.gateway.db.store import GatewayStore
from airflow_hoop.gateway.settings import GatewaySettings
from airflow_hoop.ledger.canonical import canonical, sha256_hex
from airflow_hoop.ledger.records import SettingsChanged

log = logging.getLogger(__name__)

#: The settings a reload applies; any other difference needs a restart.
RELOADABLE = ("connections",)


def settings_digest(settings: GatewaySettings) -> str:
    """SHA-256 of the settings' canonical JSON, secrets masked (pydantic dumps SecretStr as
    ``**********``): the same file and environment give the same digest, and no secret."""
    return sha256_hex(canonical(settings.model_dump(mode="json")))


@dataclass(frozen=True)
class ReloadOutcome:
    """What one reload did: ``applied`` with what changed, or why it kept the old settings."""

    applied: bool
    changed: tuple[str, ...] = ()
    reason: str = ""


class SettingsReloader:
    """Reloads ``path`` into the running gateway's settings object (shared by every part)."""

    def __init__(self, settings: GatewaySettings, store: GatewayStore, path: str | None) -> None:
        self.settings = settings
        self.store = store
        self.path = path
        self._lock = asyncio.Lock()

    async def reload(self) -> ReloadOutcome:
        """Validate, record, apply; never raises (the outcome and the log say what happened)."""
        async with self._lock:  # two SIGHUPs in a row: one reload after the other
            outcome = await self._reload()
        if outcome.applied:
            log.warning("settings reloaded from %s: %s", self.path, ", ".join(outcome.changed))
        else:
            log.error("settings reload refused, the old settings stay: %s", outcome.reason)
        return outcome

    async def _reload(self) -> ReloadOutcome:
        if not self.path:
            return ReloadOutcome(False, reason="the gateway was started without a settings file")
        try:
            candidate = GatewaySettings.load(self.path)
        except ConfigError as exc:
            return ReloadOutcome(False, reason=str(exc))
        current = self.settings.model_dump(mode="json")
        new = candidate.model_dump(mode="json")
        fixed = sorted(k for k in current if k not in RELOADABLE and current[k] != new.get(k))
        if fixed:
            return ReloadOutcome(
                False,
                reason=f"{', '.join(fixed)} changed, which only a restart applies; restart the "
                "gateway, or revert those keys and send SIGHUP again",
            )
        changed = tuple(_changes(current["connections"], new["connections"]))
        if not changed:
            return ReloadOutcome(True, reason="nothing changed")
        record = SettingsChanged(
            settings_sha256=settings_digest(candidate),
            previous_sha256=settings_digest(self.settings),
            changed=list(changed),
            instance=self.store.instance_id,
        )
        try:
            # Recorded before it applies: no policy change the ledger does not show.
            await self.store.append(None, "gateway", record)
        except LedgerError as exc:
            return ReloadOutcome(False, reason=f"the change could not be recorded ({exc.what})")
        self.settings.connections = candidate.connections
        return ReloadOutcome(True, changed=changed)


def _changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> Iterator[str]:
    """``connections.<name>[.<field>]`` for each connection added, removed or changed."""
    before = {c["name"]: c for c in old}
    after = {c["name"]: c for c in new}
    for name in sorted(before.keys() | after.keys()):
        if name not in after:
            yield f"connections.{name} removed"
        elif name not in before:
            yield f"connections.{name} added"
        else:
            for field in sorted(before[name].keys() | after[name].keys()):
                if before[name].get(field) != after[name].get(field):
                    yield f"connections.{name}.{field}"


@contextlib.contextmanager
def reload_on_sighup(reloader: SettingsReloader) -> Iterator[None]:
    """SIGHUP runs a reload on the event loop while the app lives (main thread only)."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[ReloadOutcome]] = set()

    def on_hup() -> None:
        task = loop.create_task(reloader.reload(), name="settings-reload")
        pending.add(task)
        task.add_done_callback(pending.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError, ValueError):
        # Not the main thread (an embedding server) or no signals here: no reload, said once.
        log.warning("settings reload on SIGHUP is not available in this process")
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def settings_path(explicit: str | os.PathLike[str] | None = None) -> str | None:
    """The file the settings were loaded from: the one given, else ``$HOOP_GATEWAY_CONFIG``."""
    path = explicit or os.environ.get("HOOP_GATEWAY_CONFIG")
    return str(path) if path else None
