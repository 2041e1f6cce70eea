"""Step types and verification presets from installed packages, through entry points.

A package declares modules under the entry point groups ``hookline.steps`` and ``hookline.presets``
(``[project.entry-points."hookline.steps"] upper = "acme_hookline.upper"``); each module calls
``engine.steps.register`` or ``engine.presets.register`` when imported, as the built-in modules do. So
the built-ins and a plugin come through the same door. engine.steps and engine.presets load their group
right after their own modules, before any flow is validated.

A plugin that does not load (an import error, a name already registered, a preset whose secrets would
travel unredacted) is one logged line naming it and is kept in :data:`FAILED`; the engine and every flow
not using it carry on (I11). Flows using its step type or provider then fail validation as unknown.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from engine.errors import PluginError

STEPS = "hookline.steps"
PRESETS = "hookline.presets"

log = logging.getLogger("hookline.plugins")

LOADED: dict[str, list[str]] = {STEPS: [], PRESETS: []}  # group -> names of the entry points loaded
FAILED: list[PluginError] = []


@cache
def _installed() -> Any:  # SelectableGroups on 3.11, EntryPoints from 3.12: both have select(group=)
    """Every installed entry point, read once per process (a scan of all distributions: ~10-50 ms here)."""
    return entry_points()


def load(group: str) -> list[PluginError]:
    """Import every entry point of ``group`` once; returns the failures of this call (also logged, and in FAILED)."""
    failures: list[PluginError] = []
    for ep in sorted(_installed().select(group=group), key=lambda e: e.name):
        if ep.name in LOADED.setdefault(group, []):
            continue
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party module is its own, not the engine's
            detail = str(exc).splitlines()[0][:300] if str(exc) else ""
            error = PluginError(f"plugin {ep.name!r} ({group} = {ep.value}) did not load: "
                                f"{type(exc).__name__}{': ' + detail if detail else ''}")
            log.error("%s", error)
            failures.append(error)
            continue
        LOADED[group].append(ep.name)
    FAILED.extend(failures)
    return failures
