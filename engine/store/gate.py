"""The store-backed destination gate: engine.runner's Gate over engine.destinations' rules and the store's state.

Keyed by origin (``scheme://host:port``). HOOKLINE_DESTINATIONS may name an origin or, as before, a bare
host meaning every origin on it; an origin's own entry wins over its host's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from engine.config import Settings
from engine.destinations import Destination, Limits, Verdict, host_of, parse_destinations, parse_rate
from engine.model import Step
from engine.store import Destinations

log = logging.getLogger("hookline.service")


def merge_limits(base: Limits, raw: Mapping[str, Any]) -> Limits:
    """``base`` with the overrides of a HOOKLINE_DESTINATIONS entry or a step's ``http.limits``."""
    from engine.steps import parse_duration

    changes: dict[str, Any] = {}
    if raw.get("rate") is not None:
        changes["rate"] = parse_rate(raw["rate"])
    for key in ("burst", "concurrency", "breaker_failures"):
        if raw.get(key) is not None:
            changes[key] = raw[key]
    if raw.get("breaker_cooldown") is not None:
        changes["breaker_cooldown"] = parse_duration(raw["breaker_cooldown"])
    return replace(base, **changes)


class StoreGate:
    """Destination protection backed by the store, with a breaker fast path.

    With only the breaker configured (the default), a healthy origin costs no database work: its state
    is cached for a second and written only when a call fails or a failing origin recovers. Rate and
    concurrency limits take one short transaction before and after each call.
    """

    def __init__(self, store: Destinations, settings: Settings) -> None:
        self.store = store
        self.default = Limits(breaker_failures=settings.breaker_failures, breaker_cooldown=settings.breaker_cooldown_s)
        self.configured = {key: merge_limits(self.default, raw)  # SettingsError names a bad key
                           for key, raw in parse_destinations(settings.destinations).items()}
        self.hold_s = settings.http_timeout_s + 30
        self._cache: dict[str, tuple[float, Destination | None]] = {}
        self._taken: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def limits(self, origin: str, step: Step) -> Limits:
        base = self.configured.get(origin) or self.configured.get(host_of(origin)) or self.default
        overrides = getattr(step.config, "limits", None)
        return merge_limits(base, overrides) if overrides else base

    def _state(self, origin: str) -> Destination | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(origin)
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        dest = self.store.destination(origin)
        with self._lock:
            self._cache[origin] = (now, dest)
        return dest

    def admit(self, origin: str, step: Step, holder: str) -> Verdict:
        limits = self.limits(origin, step)
        if not limits.shared_state:
            dest = self._state(origin)
            if dest is None or dest.state == "closed":
                return Verdict(True)
        verdict = self.store.destination_admit(origin, limits, holder, self.hold_s)
        if verdict.allowed:
            with self._lock:
                self._taken.add((origin, holder))
        return verdict

    def settle(self, origin: str, step: Step, holder: str, failed: bool) -> None:
        limits = self.limits(origin, step)
        with self._lock:
            took = (origin, holder) in self._taken
            self._taken.discard((origin, holder))
        dest = self._state(origin) if not took and not failed else None
        if took or failed or (dest is not None and (dest.failures or dest.state != "closed")):
            new = self.store.destination_settle(origin, limits, holder, failed)
            with self._lock:
                self._cache[origin] = (time.monotonic(), new)
            if new.state == "open" and failed:
                log.warning("circuit opened for %s after %d consecutive failures", origin, new.failures)
