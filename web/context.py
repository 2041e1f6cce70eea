"""The data behind every page, built once and either rendered or returned as JSON (STYLE habit 11).

Each ``*_context`` function returns a JSON-ready dict; ``web.ui`` renders it with a template or
returns it as the page's ``.json`` twin, and ``web.api`` returns it as is. Query parameters are parsed
here too, so a bad ``since`` gets the same one-line 400 on a page, its twin and the API.
Nothing here writes: state changes go through ``Service`` in the views.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import url_for

from engine.catalog import BrokenFlow
from engine.errors import FlowError, RunNotFound
from engine.model import TERMINAL, Flow, RunDetail, RunRecord, RunStatus, StepResult, step_id_of
from engine.presets import hint
from engine.redaction import public_names, redact, verify_names
from engine.service import Service
from engine.store.history import UNRESOLVED
from engine.templating import Expr, env_refs
from web.diagram import layout
from web.errors import ApiError
from web.hooks import service
from web.run_view import resolution, step_tree, why

DAY = 24 * 3600.0
BULK_CAP = 10_000
"""Most runs one bulk replay may create; above it the operator must narrow the filter."""

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
STATUSES = (*(s.value for s in RunStatus), UNRESOLVED)


# --- values ---------------------------------------------------------------------------------


def iso(ts: float | None) -> str | None:
    """UTC ISO-8601 with milliseconds and Z, the one time format of pages and API."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts % 1 * 1000):03d}Z"


def jsonable(value: Any) -> Any:
    """Plain JSON types only (dry-run outputs hold placeholder objects, for one)."""
    return json.loads(json.dumps(value, default=str))


def parse_time(name: str, raw: Any, now: float) -> float | None:
    """ISO-8601 (naive means UTC), epoch seconds, or an age such as ``6h`` meaning that long ago."""
    text = str(raw).strip() if raw is not None else ""
    if not text:
        return None
    if match := _AGO.fullmatch(text.lower()):
        ago = now - float(match.group(1)) * _UNITS[match.group(2)]
        if ago < 0:  # before 1970: no timestamp to show it as (it was a 500 in the filter echo)
            raise ApiError(400, f"{name}: {text[:60]!r} reaches back before 1970")
        return ago
    try:
        value = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ApiError(400, f"{name}: expected ISO-8601 (2024-05-01T10:00:00Z), epoch seconds or an age "
                                f"like 6h, got {text[:60]!r}") from None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(value) or value < 0 or value > 253402300799:  # up to 9999-12-31, what ISO can show
        raise ApiError(400, f"{name}: epoch seconds must be a non-negative number, got {text[:60]!r}")
    return value


def int_arg(args: Mapping[str, Any], name: str, default: int | None, lo: int = 0, hi: int = 2**62) -> int | None:
    raw = args.get(name)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ApiError(400, f"{name}: expected a whole number, got {str(raw)[:60]!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name}: must be between {lo} and {hi}, got {value}")
    return value


@dataclass(frozen=True)
class RunFilter:
    """The run filter of /runs, bulk replay and the API; ``raw`` keeps what was typed, for forms and links."""

    flow: str | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None
    q: str | None = None
    raw: Mapping[str, str] = field(default_factory=dict)

    KEYS = ("flow", "status", "since", "until", "q")

    @classmethod
    def parse(cls, args: Mapping[str, Any], now: float | None = None) -> RunFilter:
        now = time.time() if now is None else now
        raw = {k: str(args[k]).strip() for k in cls.KEYS if args.get(k) is not None and str(args[k]).strip()}
        status = raw.get("status")
        if status is not None and status not in STATUSES:
            raise ApiError(400, f"status: expected one of {', '.join(STATUSES)}, got {status[:60]!r}")
        return cls(flow=raw.get("flow"), status=status, since=parse_time("since", raw.get("since"), now),
                   until=parse_time("until", raw.get("until"), now), q=raw.get("q"), raw=raw)

    @property
    def empty(self) -> bool:
        return not self.raw

    def as_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "status": self.status, "since": iso(self.since), "until": iso(self.until),
                "q": self.q, "query": dict(self.raw)}


# --- runs -------------------------------------------------------------------------------------


def run_summary(run: RunRecord, notes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One row of the runs list, and the head of a run's detail. ``notes`` (HistoryStore.run_notes) add which
    filter stopped it and whether a replay or retry resolved its failure."""
    children = notes["children"] if notes else []
    resolved = resolution(run.status.value, children) if notes is not None else None
    return {
        "id": run.id,
        "flow_id": run.flow_id,
        "flow_version": run.flow_version,
        "status": run.status.value,
        "terminal": run.status in TERMINAL,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_ms": run.duration_ms,
        "dedupe_key": run.dedupe_key,
        "error": run.error,
        "reason": run.reason,
        "next_attempt_at": iso(run.next_attempt_at),
        "current_step": run.current_step,
        "deliveries": run.deliveries,
        "parent_run_id": run.parent_run_id,
        "replay_kind": run.replay_kind,
        "url": url_for("ui.run_detail", run_id=run.id),
        "why": why(run.status.value, run.error, run.reason, notes["filtered_by"] if notes else None),
        "resolution": resolved and resolved | {
            "url": url_for("ui.run_detail", run_id=resolved["by"]) if resolved["by"] else None},
    }


def summaries(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """Rows for a list of runs, with their reasons and resolutions (two index lookups for the whole page)."""
    notes = service().store.run_notes([r.id for r in runs])
    return [run_summary(r, notes.get(r.id)) for r in runs]


def runs_context(args: Mapping[str, Any]) -> dict[str, Any]:
    """Newest first, keyset-paginated (``cursor`` for older pages, ``after`` for live refresh); no COUNT."""
    flt = RunFilter.parse(args)
    limit = int_arg(args, "limit", 50, 1, 500)
    cursor = int_arg(args, "cursor", None, 1)
    after = int_arg(args, "after", None, 0)
    assert limit is not None
    page = service().store.list_runs(flow=flt.flow, status=flt.status, since=flt.since, until=flt.until, q=flt.q,
                                     cursor=cursor, after=after, limit=limit)
    runs = summaries(page.runs)
    top = max([r.id for r in page.runs] + [after or 0])
    return {
        "filter": flt.as_dict(),
        "runs": runs,
        "next_cursor": page.next_cursor,
        "next_url": url_for("ui.runs", **{**flt.raw, "cursor": str(page.next_cursor)}) if page.next_cursor else None,  # type: ignore[arg-type]
        "max_id": top,
        "live": cursor is None and flt.until is None,
        "limit": limit,
    }


def runs_by_ids_context(raw: str) -> dict[str, Any]:
    """``ids=1,2,3``: the current state of rows a page already shows (live status updates)."""
    try:
        ids = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise ApiError(400, f"ids: expected comma-separated run ids, got {raw[:60]!r}") from None
    if len(ids) > 200:
        raise ApiError(400, "ids: at most 200 run ids at once")
    return {"runs": summaries(service().store.runs_by_ids(ids))}


def _headers(pairs: Any) -> list[list[str]]:
    if isinstance(pairs, Mapping):
        pairs = pairs.items()
    return [[str(k), str(v)] for k, v in pairs or ()]


def _http_view(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A stored request/response record (headers already redacted by the engine) for display."""
    if record is None:
        return None
    view = dict(record)
    view["headers"] = _headers(record.get("headers"))
    body = record.get("body")
    view["body_json"] = _maybe_json(body) if isinstance(body, str) else None
    return view


def _maybe_json(text: str) -> Any:
    if not text or text.lstrip()[:1] not in ("{", "["):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def step_view(step: StepResult, run: RunRecord) -> dict[str, Any]:
    error = None
    if step.error_message or step.error_type:
        error = {"type": step.error_type, "message": (step.error_message or "")[:4000]}
    # A retry copies the parent's done steps: they finished before this run existed.
    kept = run.replay_kind == "retry" and step.finished_at is not None and step.finished_at < run.created_at
    return {
        "path": step.path,
        "step_id": step.step_id,
        "status": step.status.value,
        "attempt": step.attempt,
        "position": step.position,
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
        "duration_ms": step.duration_ms,
        "input": jsonable(step.input),
        "output": jsonable(step.output),
        "request": _http_view(step.request),
        "response": _http_view(step.response),
        "error": error,
        "retry_at": iso(step.retry_at),
        "idempotency_key": step.idempotency_key,
        "kept_from_parent": kept,
    }


def run_context(run_id: int) -> dict[str, Any]:
    """Everything about one run: its steps (every attempt), the inbound request, links and actions."""
    svc = service()
    detail = svc.store.get_run(run_id)
    if detail is None:
        raise ApiError(404, f"no run with id {run_id}")
    run = detail.run
    current = svc.catalog.get(run.flow_id)
    current_version = current.version if isinstance(current, Flow) else None
    loaded = current_version is not None
    body = detail.event.body_text()
    steps = [step_view(s, run) for s in detail.steps]
    clipped = len(body) > 256 * 1024
    ctx = {
        "run": run_summary(run, _notes(detail)) | {"order_key": run.order_key, "index": detail.index},
        "flow": {
            "id": run.flow_id,
            "loaded": loaded,
            "current_version": current_version,
            "ran_current_version": current_version == run.flow_version,
            "url": url_for("ui.flow_detail", flow_id=run.flow_id),
        },
        "event": {
            "received_at": iso(detail.event.received_at),
            "method": detail.event.method,
            "query": detail.event.query,
            "content_type": detail.event.content_type,
            "headers": _headers(detail.event.headers),
            "size": len(detail.event.body),
            "body": body[: 256 * 1024],
            "body_truncated": clipped,
            "body_json": None if clipped else _maybe_json(body),
        },
        "steps": steps,
        "tree": step_tree(steps, _ran_flow(svc, run, current)),
        "parent": ({"id": run.parent_run_id, "url": url_for("ui.run_detail", run_id=run.parent_run_id)}
                   if run.parent_run_id else None),
        "children": [run_summary(c) for c in detail.children],
        "actions": _actions(detail, loaded),
    }
    return ctx


def _notes(detail: RunDetail) -> dict[str, Any]:
    """run_notes for one run, from what get_run already read (no further query)."""
    filtered = [s.path for s in detail.steps if s.status.value == "filtered"]
    return {"filtered_by": filtered[-1] if filtered else None,
            "children": [{"id": c.id, "status": c.status.value, "replay_kind": c.replay_kind} for c in detail.children]}


def _ran_flow(svc: Service, run: RunRecord, current: Flow | BrokenFlow | None) -> Flow | None:
    """The flow version the run ran, for the text of switch conditions; None when it cannot be compiled."""
    if isinstance(current, Flow) and current.version == run.flow_version:
        return current
    stored = svc.store.flow_source(run.flow_version)
    try:
        return svc.flow_version(run.flow_version, stored[1], stored[2]) if stored else None
    except Exception:  # noqa: BLE001 - an old version that no longer compiles only loses the case texts
        return None


def _actions(detail: RunDetail, loaded: bool) -> dict[str, Any]:
    run = detail.run
    rid = run.id
    return {
        "replay": url_for("ui.replay", run_id=rid) if loaded else None,
        "replay_original": url_for("ui.replay", run_id=rid),
        "retry": url_for("ui.retry", run_id=rid) if run.status is RunStatus.FAILED else None,
        "dry_run": url_for("ui.dry_run", run_id=rid) if loaded else None,
        "fixture": url_for("ui.fixture", run_id=rid) if run.status in TERMINAL else None,
        "api": url_for("api.get_run", run_id=rid),
    }


def dry_run_context(svc: Service, run_id: int) -> dict[str, Any]:
    """What the current flow version would send for this run's event; nothing is sent."""
    result = svc.dry_run(run_id)  # RunNotFound, FlowNotLoaded: 404, 409 (web/errors.py)
    run = svc.store.get_run_record(run_id)
    if run is None:
        raise RunNotFound(run_id)
    return {
        "run": run_summary(run),
        "status": result.status.value,
        "error": result.error,
        "steps": [step_view(s, run) for s in result.steps],
        "note": "dry run: templates rendered with the current flow version; no request was sent",
    }


# --- flows ------------------------------------------------------------------------------------


def _error_view(err: FlowError) -> dict[str, Any]:
    return {"file": err.file, "line": err.line, "path": err.path, "message": err.message, "text": str(err)}


def _missing_env(flow: Flow, env: Mapping[str, str]) -> list[str]:
    """Problems a loaded flow will hit at run time: ``${VAR}``s with no value and no default (names only)."""
    problems: list[str] = []
    for step in flow.steps:
        config = vars(step.config) if hasattr(step.config, "__dict__") else {"value": step.config}
        names = sorted({r.name for v in config.values() if isinstance(v, Expr) for r in env_refs(v)
                        if r.default is None and not env.get(r.name)})
        problems += [f"step {step.id}: environment variable {n} is not set" for n in names]
    if flow.trigger.verify is not None:
        from engine import envrefs

        raw = list(flow.trigger.verify.secrets) + [str(v) for v in flow.trigger.verify.options.values()]
        names = sorted({r.name for text in raw for r in envrefs.refs(text) if r.default is None and not env.get(r.name)})
        problems += [f"trigger.verify: environment variable {n} is not set; webhooks answer 503" for n in names]
    return problems


def flow_summary(item: Flow | BrokenFlow, stats: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    counts: dict[str, int] = dict(stats["counts"])
    finished = counts.get("succeeded", 0) + counts.get("failed", 0)
    last_failure = stats["last_failure"]
    base: dict[str, Any] = {
        "id": item.id,
        "path": item.path,
        "url": url_for("ui.flow_detail", flow_id=item.id),
        "runs_url": url_for("ui.runs", flow=item.id),
        "trigger_url": url_for("hooks.receive", flow_id=item.id, _external=True),
        "runs_24h": sum(counts.values()),
        "counts_24h": counts,
        "success_rate": round(counts.get("succeeded", 0) / finished, 4) if finished else None,
        "last_failure": run_summary(last_failure) if last_failure else None,
        "volume": stats["volume"],
    }
    if isinstance(item, BrokenFlow):
        return base | {"ok": False, "name": item.id, "errors": [_error_view(e) for e in item.errors], "warnings": [],
                       "verify": None, "steps": [], "version": None}
    verify = item.trigger.verify
    return base | {
        "ok": True,
        "name": item.name,
        "description": item.description,
        "version": item.version,
        "errors": [],
        "warnings": _missing_env(item, env),
        "verify": {"provider": verify.provider, "hint": hint(verify)} if verify else None,
        "steps": [{"id": s.id, "type": s.type, "line": s.line, "description": s.description} for s in item.steps],
    }


UNRESOLVED_CAP = 100
"""Unresolved failures are counted up to this many per flow (then shown as 100+): bounded at any volume."""


def _unresolved(flow_id: str, count: int) -> dict[str, Any]:
    return {"unresolved": count, "unresolved_capped": count >= UNRESOLVED_CAP,
            "unresolved_url": url_for("ui.runs", flow=flow_id, status=UNRESOLVED)}


def flows_context() -> dict[str, Any]:
    """Every flow file, loaded or not, with 24 h stats and an hourly volume series."""
    svc = service()
    since = time.time() - DAY
    items = svc.catalog.all()
    stats = svc.store.flow_stats([f.id for f in items], since, 3600.0)
    unresolved = svc.store.unresolved_counts([f.id for f in items], UNRESOLVED_CAP)
    flows = [flow_summary(f, stats[f.id], svc.env) | _unresolved(f.id, unresolved[f.id]) for f in items]
    return {"flows": flows, "flows_dir": str(svc.catalog.directory)}


def flow_context(flow_id: str) -> dict[str, Any]:
    """One flow: its source with line numbers (problems at their lines), trigger and recent runs."""
    svc = service()
    item = svc.catalog.get(flow_id)
    if item is None:
        raise ApiError(404, f"no flow with id {flow_id!r}")
    since = time.time() - DAY
    summary = flow_summary(item, svc.store.flow_stats([item.id], since, 3600.0)[item.id], svc.env) | _unresolved(
        item.id, svc.store.unresolved_counts([item.id], UNRESOLVED_CAP)[item.id])
    if isinstance(item, Flow):
        source = item.source
    else:
        try:
            source = Path(item.path).read_text(encoding="utf-8", errors="replace")[: 1024 * 1024]
        except OSError as exc:
            source = f"# cannot read {item.path}: {exc.strerror}"
    by_line: dict[int, list[str]] = {}
    for err in summary["errors"]:
        if err["line"] is not None and (not err["file"] or err["file"] == item.path):
            by_line.setdefault(err["line"], []).append(err["message"] if not err["path"]
                                                       else f"{err['path']}: {err['message']}")
    lines = [{"n": n, "text": text, "errors": by_line.get(n, [])} for n, text in enumerate(source.splitlines(), 1)]
    recent = svc.store.list_runs(flow=item.id, limit=20)
    return {"flow": summary, "source": lines, "runs": summaries(recent.runs),
            "diagram": flow_diagram(svc, item, since) if isinstance(item, Flow) else None,
            "empty_keys": empty_keys(svc, item, since) if isinstance(item, Flow) else []}


EMPTY_KEYS_CAP = 1000
"""Runs without a dedupe key or index value are counted up to this many per key (shown as "1,000+")."""


def empty_keys(svc: Service, flow: Flow, since: float) -> list[dict[str, Any]]:
    """Per declared dedupe key and index field, the runs of the last 24 h where it resolved to nothing, and
    the first of them: a typo such as ``dedupe: $.idd`` passes validation and silently disables dedupe.
    Index fields count the runs stored since their markers exist (ingest keeps one per empty field)."""
    trig = flow.trigger
    if trig.dedupe is None and not trig.index:
        return []
    found = svc.store.empty_keys(flow.id, since, dedupe=trig.dedupe is not None, index=list(trig.index),
                                 cap=EMPTY_KEYS_CAP)
    keys = [("dedupe", "dedupe key", trig.dedupe.source, found["dedupe"])] if trig.dedupe is not None else []
    keys += [(f"index.{n}", f"index value {n}", e.source, found["index"][n]) for n, e in trig.index.items()]
    return [{"key": key, "label": label, "expr": expr, "count": count, "capped": count >= EMPTY_KEYS_CAP,
             "first_run_id": first, "first_run_url": url_for("ui.run_detail", run_id=first) if first else None}
            for key, label, expr, (count, first) in keys]


DIAGRAM_RUNS = 500
"""The flow page's per-step counts read the newest this many runs of the last 24 h: bounded at any volume."""


def flow_diagram(svc: Service, flow: Flow, since: float) -> dict[str, Any]:
    """The flow's diagram (web.diagram) with, per step, succeeded and failed-for-good counts and its most
    common error over the last 24 h (at most DIAGRAM_RUNS runs, newest first)."""
    stats = svc.store.step_stats(flow.id, since, DIAGRAM_RUNS)
    by_id: dict[str, dict[str, Any]] = {}
    for path, (succeeded, failed, errors) in stats.items():
        node = by_id.setdefault(step_id_of(path), {"succeeded": 0, "failed": 0, "errors": {}})
        node["succeeded"] += succeeded
        node["failed"] += failed
        for message, count in errors.items():
            node["errors"][message] = node["errors"].get(message, 0) + count
    for node in by_id.values():
        errors = node.pop("errors")
        node["error"] = max(errors, key=lambda m: (errors[m], m)) if errors else None
        node["error_count"] = errors.get(node["error"], 0) if errors else 0
    return layout(flow, by_id) | {"window": {"since": iso(since), "max_runs": DIAGRAM_RUNS}}


# --- sandbox ----------------------------------------------------------------------------------


def sandbox_context(name: str | None) -> dict[str, Any]:
    """Requests the sandbox receiver got, newest first, with values of flows' ``${VAR}``s masked (I9)."""
    svc = service()
    if not svc.settings.sandbox:
        raise ApiError(404, "the sandbox receiver is off (HOOKLINE_SANDBOX=0)")
    flows = svc.catalog.flows()
    secrets = {n: svc.env[n] for f in flows for n in f.env_names if svc.env.get(n)}
    public = public_names(secrets, frozenset().union(*(verify_names(f) for f in flows)))
    items = []
    for row in svc.store.sandbox_list(name or None, limit=100):
        row = redact(row, secrets, public)
        items.append(row | {"created_at": iso(row["created_at"]), "headers": _headers(row["headers"]),
                            "body_json": _maybe_json(row["body"])})
    return {"name": name or None, "requests": items,
            "receiver_url": url_for("sandbox.receive", name="example", path="", _external=True)}
