"""The operator pages: flows, runs, a run's detail and its actions, the sandbox inbox.

Every page is a context dict from web.context, rendered by a template or returned as the page's
``.json`` twin (same URL plus ``.json``). The POST actions (replay, retry, bulk replay and retry) go
through Service and engine.bulk and redirect to the new run, the runs or a bulk job's progress; CSRF is
checked before any view runs (web.auth).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from flask import Blueprint, Flask, Response, flash, jsonify, redirect, render_template, request, url_for
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket

from engine import bulk
from engine.errors import RunNotFound, StoreError
from engine.flowtest import export_fixture, placeholder_env
from engine.model import TERMINAL
from engine.service import Service
from web import api, bulk_view, context
from web.errors import ApiError
from web.hooks import service

bp = Blueprint("ui", __name__)
log = logging.getLogger("hookline.web")


def _page(template: str, ctx: dict[str, Any]) -> Any:
    """The JSON twin for ``.json`` paths, the template otherwise; both from the same dict."""
    if request.path.endswith(".json"):
        return jsonify(ctx)
    json_url = request.path.rstrip("/") + ".json" if request.path != "/" else url_for("ui.flows_json")
    if request.query_string:
        json_url += "?" + request.query_string.decode("latin-1")
    return render_template(template, **ctx, json_url=json_url)


# --- flows ------------------------------------------------------------------------------------


@bp.get("/")
@bp.get("/flows")
def flows() -> Any:
    return _page("flows/list.html", api.with_connections(context.flows_context()))


@bp.get("/flows.json")
def flows_json() -> Any:
    return jsonify(api.with_connections(context.flows_context()))


@bp.get("/flows/<flow_id>.json")
@bp.get("/flows/<flow_id>")
def flow_detail(flow_id: str) -> Any:
    return _page("flows/detail.html", context.flow_context(flow_id))


# --- runs -------------------------------------------------------------------------------------


@bp.get("/runs.json")
@bp.get("/runs")
def runs() -> Any:
    ctx = context.runs_context(request.args)
    ctx["flow_ids"] = [f.id for f in service().catalog.all()]
    ctx["statuses"] = context.STATUSES
    return _page("runs/list.html", ctx)


@bp.get("/runs/<int:run_id>.json")
@bp.get("/runs/<int:run_id>")
def run_detail(run_id: int) -> Any:
    ctx = context.run_context(run_id)
    record = service().store.get_run_record(run_id)
    ctx["versions"] = bulk_view.run_versions(service(), record) if record else None
    return _page("runs/detail.html", ctx)


@bp.post("/runs/<int:run_id>/replay")
def replay(run_id: int) -> Any:
    original = request.form.get("version") == "original"
    new_id = service().replay(run_id, original_version=original)
    flash(f"Run {run_id} replayed{' on its original flow version' if original else ''} as run {new_id}.", "ok")
    return redirect(url_for("ui.run_detail", run_id=new_id))


@bp.post("/runs/<int:run_id>/retry")
def retry(run_id: int) -> Any:
    original = request.form.get("version") == "original"  # the form's default is the current version
    new_id = service().retry_from_failed(run_id, original_version=original)
    where = "its original" if original else "the current"
    flash(f"Run {run_id} retried from its failed step on {where} flow version as run {new_id}; "
          "its succeeded steps were kept.", "ok")
    return redirect(url_for("ui.run_detail", run_id=new_id))


@bp.get("/runs/<int:run_id>/dry-run.json")
@bp.get("/runs/<int:run_id>/dry-run")
def dry_run(run_id: int) -> Any:
    return _page("runs/dry_run.html", context.dry_run_context(service(), run_id))


@bp.get("/runs/<int:run_id>/fixture.yaml")
def fixture(run_id: int) -> Any:
    svc = service()
    detail = svc.store.get_run(run_id)
    if detail is None:
        raise RunNotFound(run_id)
    if detail.run.status not in TERMINAL:
        raise ApiError(409, f"run {run_id} is {detail.run.status.value}; export it once it has finished")
    stored = svc.store.flow_source(detail.run.flow_version)
    flow = svc.flow_version(detail.run.flow_version, stored[1], stored[2]) if stored else None
    env = placeholder_env(flow) if flow else {}
    text = export_fixture(detail, detail.run.flow_id, env=env, trigger=flow.trigger if flow else None)
    name = f"{detail.run.flow_id}-run-{run_id}.yaml"
    return Response(text, mimetype="application/yaml",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/runs/replay.json")
@bp.get("/runs/replay")
def bulk_confirm() -> Any:
    """Step one of a bulk replay: how many runs the filter selects (at most BULK_CAP), nothing done yet."""
    flt = context.RunFilter.parse(request.args)
    ids = api.bulk_ids(flt)
    plan = bulk.Plan("replay", False, [], bulk.records(service(), ids))  # counted whatever the version
    return _page("runs/bulk.html", bulk_view.confirm_context(service(), "replay", flt, ids, plan))


@bp.post("/runs/replay")
def bulk_replay() -> Any:
    """Step two: replay what the confirmed filter selects, up to the newest run the operator saw counted."""
    flt = context.RunFilter.parse(request.form)
    plan = bulk.plan_replay(service(), _confirmed_ids(flt), original_version=request.form.get("version") == "original")
    return _start(plan, flt)


@bp.get("/runs/retry.json")
@bp.get("/runs/retry")
def bulk_retry_confirm() -> Any:
    """Step one of a bulk retry from the failed step: the runs it takes on the chosen version, and those it skips."""
    flt = context.RunFilter.parse(request.args)
    ids = api.bulk_ids(flt, "bulk retry")
    plan = bulk.plan_retry(service(), ids, original_version=api.is_original(request.args.get("version"), "current"))
    return _page("runs/bulk.html", bulk_view.confirm_context(service(), "retry", flt, ids, plan))


@bp.post("/runs/retry")
def bulk_retry() -> Any:
    flt = context.RunFilter.parse(request.form)
    plan = bulk.plan_retry(service(), _confirmed_ids(flt, "bulk retry"),
                           original_version=api.is_original(request.form.get("version"), "current"))
    return _start(plan, flt)


def _confirmed_ids(flt: context.RunFilter, action: str = "bulk replay") -> list[int]:
    max_id = context.int_arg(request.form, "max_id", 0, 0)
    return [i for i in api.bulk_ids(flt, action) if i <= (max_id or 0)]


def _start(plan: bulk.Plan, flt: context.RunFilter) -> Any:
    """A bulk job: done before answering when it fits in one chunk, else carried on in the background
    while its page shows the progress (any web process can show it: it is in the database)."""
    svc = service()
    job_id = bulk.start(svc, plan, dict(flt.raw))
    if len(plan.pairs) <= svc.bulk_chunk:
        job = bulk.run(svc, job_id)
        flash(bulk_view.summary(job), "error" if job.error else "ok")
        return redirect(url_for("ui.runs", flow=flt.flow or None))
    _carry_on(svc, job_id)
    return redirect(url_for("ui.job", job_id=job_id))


def _carry_on(svc: Service, job_id: int) -> None:
    def work() -> None:
        try:
            bulk.run(svc, job_id)
        except StoreError as exc:  # the database, not a bug: one line; the job stays unfinished and is carried on
            log.warning("bulk job %s paused: %s; a worker's reaper or its page carries it on", job_id, exc)
        except Exception:  # noqa: BLE001 - the job stays unfinished; its page offers to carry it on
            log.exception("bulk job %s stopped", job_id)

    threading.Thread(target=work, name=f"hookline-bulk-{job_id}", daemon=True).start()


@bp.get("/runs/jobs/<int:job_id>.json")
@bp.get("/runs/jobs/<int:job_id>")
def job(job_id: int) -> Any:
    """A bulk job's progress (the page polls the JSON twin until it is finished)."""
    found = service().store.get_job(job_id)
    if found is None:
        raise ApiError(404, f"no bulk job with id {job_id}")
    return _page("runs/job.html", {"job": bulk_view.job_view(found)})


@bp.post("/runs/jobs/<int:job_id>/continue")
def job_continue(job_id: int) -> Any:
    """Carry on a job whose process went away (a chunk is never created twice: engine.store.replay)."""
    found = service().store.get_job(job_id)
    if found is None:
        raise ApiError(404, f"no bulk job with id {job_id}")
    if not found.finished:
        _carry_on(service(), job_id)
    return redirect(url_for("ui.job", job_id=job_id))


# --- sandbox ----------------------------------------------------------------------------------


@bp.get("/sandbox.json")
@bp.get("/sandbox")
def sandbox() -> Any:
    return _page("sandbox/list.html", context.sandbox_context(request.args.get("name")))


# --- template helpers -------------------------------------------------------------------------


def pretty_json(value: Any) -> str:
    """Indented JSON text; the template autoescapes it and app.js highlights it (escaping first)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def short_time(value: str | None) -> str:
    """``2024-05-01T10:00:03.123Z`` -> ``2024-05-01 10:00:03``; the pages say UTC once."""
    return value.replace("T", " ")[:19] if value else "–"


def duration(ms: float | None) -> str:
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%".replace(".0%", "%")


class _SharedBytecode(BytecodeCache):
    """Compiled templates shared by every app in the process (tests build dozens); keyed by source checksum."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        if bucket.key in self._code:
            bucket.bytecode_from_string(self._code[bucket.key])

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_BYTECODE = _SharedBytecode()


def init_app(app: Flask) -> None:
    app.jinja_env.bytecode_cache = _BYTECODE
    app.add_template_filter(pretty_json)
    app.add_template_filter(short_time)
    app.add_template_filter(duration)
    app.add_template_filter(percent)
    app.context_processor(lambda: {"sandbox_enabled": service().settings.sandbox})
    app.register_blueprint(bp)
    app.register_blueprint(api.bp)
