"""The JSON API under /api: the pages' data for scripts, plus the operator actions.

Reads return the same context dicts as the pages' ``.json`` twins. Writes go through Service and
answer 201 with the new run ids; its refusals (RunNotFound, FlowNotLoaded, NotRetryable) become 404/409
in web/errors.py, so nothing here checks them first. Described by /api/openapi.json (web/openapi.py); errors have the one
JSON shape of web/errors.py.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request, url_for

from engine import bulk
from web import bulk_view, context
from web.errors import ApiError
from web.hooks import service

bp = Blueprint("api", __name__, url_prefix="/api")


def _body() -> dict[str, Any]:
    if not request.get_data(cache=True):
        return {}
    data = request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    return data


def _original(version: Any) -> bool:
    return is_original(version, "current")


def is_original(version: Any, default: str) -> bool:
    """``version``: "current" or "original" (None or empty means ``default``); a 400 for anything else."""
    if version in (None, ""):
        version = default
    if version == "current":
        return False
    if version == "original":
        return True
    raise ApiError(400, f"version: expected 'current' or 'original', got {str(version)[:40]!r}")


def bulk_ids(flt: context.RunFilter, action: str = "bulk replay") -> list[int]:
    """Run ids a bulk action would take, oldest first; refuses an empty filter and more than BULK_CAP runs."""
    if flt.empty:
        raise ApiError(400, f"{action} needs a filter (flow, status, since, until or q)")
    ids = service().store.ids_matching(flow=flt.flow, status=flt.status, since=flt.since, until=flt.until, q=flt.q,
                                       limit=context.BULK_CAP + 1)
    if len(ids) > context.BULK_CAP:
        raise ApiError(400, f"more than {context.BULK_CAP:,} runs match; {action} takes at most {context.BULK_CAP:,} "
                            "at a time: narrow the filter (a shorter time range, one flow or one status)")
    return ids


def _created(parent: int, new_ids: list[int]) -> Any:
    return jsonify({"ok": True, "parent_run_id": parent, "run_id": new_ids[0],
                    "url": url_for("ui.run_detail", run_id=new_ids[0])}), 201


@bp.get("/flows")
def list_flows() -> Any:
    return jsonify(with_connections(context.flows_context()))


def with_connections(ctx: dict[str, Any]) -> dict[str, Any]:
    """The flows page and its API list connections too: type, token status, flows using them; never values."""
    from engine.connections.overview import overview

    svc = service()
    runtime = svc.options.connections
    ctx["connections"] = overview(svc.catalog.connections, svc.catalog.flows(),
                                  runtime.statuses() if runtime is not None else {}, svc.env)
    return ctx


@bp.get("/flows/<flow_id>")
def get_flow(flow_id: str) -> Any:
    return jsonify(context.flow_context(flow_id))


@bp.get("/runs")
def list_runs() -> Any:
    ids = request.args.get("ids")
    if ids is not None:
        return jsonify(context.runs_by_ids_context(ids))
    return jsonify(context.runs_context(request.args))


@bp.get("/runs/<int:run_id>")
def get_run(run_id: int) -> Any:
    ctx = context.run_context(run_id)
    record = service().store.get_run_record(run_id)
    ctx["versions"] = bulk_view.run_versions(service(), record) if record else None
    return jsonify(ctx)


@bp.post("/runs/<int:run_id>/replay")
def replay(run_id: int) -> Any:
    original = _original(_body().get("version"))
    return _created(run_id, [service().replay(run_id, original_version=original)])


@bp.post("/runs/<int:run_id>/retry")
def retry(run_id: int) -> Any:
    # without a body: the run's original version, as before `version` existed
    original = is_original(_body().get("version"), "original")
    return _created(run_id, [service().retry_from_failed(run_id, original_version=original)])


@bp.post("/runs/<int:run_id>/dry-run")
def dry_run(run_id: int) -> Any:
    return jsonify(context.dry_run_context(service(), run_id))


@bp.post("/runs/replay")
def bulk_replay() -> Any:
    body = _body()
    original = _original(body.get("version"))
    flt = context.RunFilter.parse(body)
    ids = bulk_ids(flt)
    svc = service()
    job = bulk.run(svc, bulk.start(svc, bulk.plan_replay(svc, ids, original_version=original), dict(flt.raw)))
    return jsonify({"ok": True, "count": len(job.run_ids), "replayed": ids, "run_ids": job.run_ids,
                    "filter": flt.as_dict(), "job": bulk_view.job_view(job)}), 201


@bp.post("/runs/retry")
def bulk_retry() -> Any:
    """Retry from the failed step every failed run of the filter not yet followed up (the UI's bulk retry)."""
    body = _body()
    original = is_original(body.get("version"), "current")
    flt = context.RunFilter.parse(body)
    svc = service()
    plan = bulk.plan_retry(svc, bulk_ids(flt, "bulk retry"), original_version=original)
    job = bulk.run(svc, bulk.start(svc, plan, dict(flt.raw)))
    parents = {r.id: r.parent_run_id for r in svc.store.runs_by_ids(job.run_ids)}  # skipped at creation: absent
    return jsonify({"ok": True, "count": len(job.run_ids), "retried": [parents.get(i) for i in job.run_ids],
                    "run_ids": job.run_ids, "version": plan.version,
                    "skipped": [{"reason": r, "count": len(i), "first_ids": i[:10]} for r, i in plan.skipped.items() if i],
                    "filter": flt.as_dict(), "job": bulk_view.job_view(job)}), 201


@bp.get("/jobs/<int:job_id>")
def get_job(job_id: int) -> Any:
    """A bulk job's progress: done of total, then the runs it created."""
    job = service().store.get_job(job_id)
    if job is None:
        raise ApiError(404, f"no bulk job with id {job_id}")
    return jsonify({"job": bulk_view.job_view(job)})


@bp.get("/openapi.json")
def openapi() -> Any:
    from web.openapi import spec

    return jsonify(spec())
