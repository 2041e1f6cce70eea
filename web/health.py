"""/healthz (the process answers) and /readyz (database and queue reachable)."""

from __future__ import annotations

import sys
from typing import Any

from flask import Blueprint, current_app, jsonify

from web.hooks import service

bp = Blueprint("health", __name__)


@bp.route("/healthz")
def healthz() -> Any:
    return jsonify({"ok": True})


@bp.route("/readyz")
def readyz() -> Any:
    svc = service()
    checks: dict[str, str] = {}
    try:
        guard = current_app.extensions.get("hookline_sqlite_guard")
        if guard is not None:
            guard.check()  # a deleted or replaced SQLite file still answers pings through open connections
        svc.store.ping()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"unavailable: {str(exc)[:200]}"
    if svc.pending is not None:
        try:
            checks["queue"] = f"ok ({svc.pending()} pending)"
        except Exception as exc:  # noqa: BLE001
            checks["queue"] = f"unavailable: {str(exc)[:200]}"
    tasks = sys.modules.get("engine.app.tasks")  # hookline serve: the worker threads of this very process
    if tasks is not None and tasks.store_breaker.down:
        checks["worker"] = f"paused: database {tasks.store_breaker.status()}"
    ok = all(v.startswith("ok") for v in checks.values())
    return jsonify({"ok": ok, "checks": checks}), 200 if ok else 503
