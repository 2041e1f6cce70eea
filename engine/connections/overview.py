"""What the flows page shows about connections: type, token status, which flows use them; never a value."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from engine.connections.load import ConnectionSet, connection_uses
from engine.connections.runtime import CachedToken
from engine.model import Flow


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def overview(connections: ConnectionSet, flows: Iterable[Flow], tokens: Mapping[str, CachedToken],
             env: Mapping[str, str], now: float | None = None) -> list[dict[str, Any]]:
    """One dict per connection, valid ones first, then broken ones with their problems.

    ``token`` is set for OAuth2 connections: ``valid_until`` (None before the first request),
    ``refreshed_at``, and the last refresh error while no refresh has succeeded since.
    """
    now = time.time() if now is None else now
    used: dict[str, list[str]] = {}
    for flow in flows:
        for use in connection_uses(flow.source, flow.path):
            if flow.id not in used.setdefault(use.name, []):
                used[use.name].append(flow.id)
    warnings = connections.env_warnings(env)
    out: list[dict[str, Any]] = []
    for name, conn in sorted(connections.connections.items()):
        item: dict[str, Any] = {"name": name, "type": conn.type, "ok": True, "where": conn.where,
                                "used_by": used.get(name, []), "errors": [],
                                "warnings": [w.split(": ", 1)[1] for w in warnings if f": connection {name}: " in w]}
        if conn.kind.tokens:
            row = tokens.get(name)
            item["token"] = {
                "valid_until": _iso(row.expires_at) if row and row.expires_at else None,
                "valid": bool(row and row.expires_at and row.expires_at > now),
                "refreshed_at": _iso(row.refreshed_at) if row else None,
                "last_error": row.error if row else None,
                "last_error_at": _iso(row.error_at) if row else None,
            }
        out.append(item)
    for name, errors in sorted(connections.broken.items()):
        out.append({"name": name, "type": None, "ok": False, "where": connections.file,
                    "used_by": used.get(name, []), "errors": [str(e) for e in errors], "warnings": []})
    return out
