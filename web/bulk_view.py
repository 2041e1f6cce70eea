"""The data of the bulk confirm pages, the bulk job (progress) page and a run's "what changed" box.

Like web.context, each function returns a JSON-ready dict that web.ui renders or returns as the
page's ``.json`` twin. Nothing here writes; the POST views in web.ui start and carry on the jobs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from flask import url_for

from engine import bulk
from engine.model import Flow, RunRecord
from engine.service import Service
from engine.store.replay import BulkJob
from engine.versions import version_change
from web import context


def current_versions(svc: Service, flow_ids: Sequence[str]) -> dict[str, Flow]:
    out = {}
    for flow_id in set(flow_ids):
        flow = svc.catalog.get(flow_id)
        if isinstance(flow, Flow):
            out[flow_id] = flow
    return out


def _sources(svc: Service, versions: Sequence[str], current: dict[str, Flow]) -> dict[str, str]:
    sources = {f.version: f.source for f in current.values()}
    for version in versions:
        if version not in sources:
            stored = svc.store.flow_source(version)
            sources[version] = stored[1] if stored else ""
    return sources


def run_versions(svc: Service, run: RunRecord) -> dict[str, Any]:
    """The run's version against the flow's current one: ``{"original", "current", "changed", "diff"}``."""
    current = current_versions(svc, [run.flow_id])
    now = current.get(run.flow_id)
    if now is None or now.version == run.flow_version:
        return version_change(run.flow_version, now.version if now else None, {})
    return version_change(run.flow_version, now.version, _sources(svc, [run.flow_version], current))


def version_groups(svc: Service, runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Each distinct (flow, original version) of a bulk selection: its run count and its diff against current."""
    counts: dict[tuple[str, str], int] = {}
    for run in runs:
        counts[(run.flow_id, run.flow_version)] = counts.get((run.flow_id, run.flow_version), 0) + 1
    current = current_versions(svc, [f for f, _ in counts])
    sources = _sources(svc, [v for (f, v) in counts if f in current and current[f].version != v], current)
    groups = []
    for (flow_id, version), count in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1])):
        now = current.get(flow_id)
        groups.append({"flow_id": flow_id, "count": count,
                       **version_change(version, now.version if now else None, sources)})
    return groups


def confirm_context(svc: Service, kind: str, flt: context.RunFilter, ids: list[int], plan: bulk.Plan,
                    ) -> dict[str, Any]:
    """Step one of a bulk action: how many runs it takes (and which it skips, and why), nothing done yet."""
    # Ages like 6h become fixed times, so the POST selects the runs counted here and no others.
    fields = dict(flt.raw) | {k: v for k, v in (("since", context.iso(flt.since)), ("until", context.iso(flt.until)))
                              if v is not None}
    chosen = [r.id for r in plan.runs]
    return {
        "kind": kind,
        "version": plan.version,
        "filter": flt.as_dict(),
        "fields": fields,
        "matched": len(ids),
        "count": len(chosen),
        "skipped": [{"reason": reason, "count": len(skipped), "first_ids": skipped[:10]}
                    for reason, skipped in plan.skipped.items() if skipped],
        "max_id": max(ids, default=0),
        "cap": context.BULK_CAP,
        "first_ids": chosen[:20],
        "versions": version_groups(svc, plan.runs),
        "action": url_for("ui.bulk_replay" if kind == "replay" else "ui.bulk_retry"),
        "switch": {v: _url("ui.bulk_retry_confirm", fields | {"version": v}) for v in ("current", "original")}
        if kind == "retry" else None,
    }


def _url(endpoint: str, args: dict[str, str]) -> str:
    """url_for with query arguments from a dict (its typing takes them only as keywords)."""
    return url_for(endpoint, **args)  # type: ignore[arg-type]


def job_view(job: BulkJob, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    stalled = not job.finished and now - job.updated_at > bulk.STALLED_S
    state = "failed" if job.error else "done" if job.finished else "stalled" if stalled else "running"
    first, last = (job.run_ids[0], job.run_ids[-1]) if job.run_ids else (None, None)
    return {
        "id": job.id,
        "kind": job.kind,
        "version": job.version,
        "state": state,
        "total": job.total,
        "done": job.done,
        "percent": round(100 * job.done / job.total) if job.total else 100,
        "finished": job.finished,
        "error": job.error,
        "skipped": [{"reason": r, "count": n} for r, n in job.skipped.items()],
        "run_ids": job.run_ids[:50],
        "first_run_id": first,
        "last_run_id": last,
        "created_at": context.iso(job.created_at),
        "updated_at": context.iso(job.updated_at),
        "url": url_for("ui.job", job_id=job.id),
        "json_url": url_for("ui.job", job_id=job.id) + ".json",
        "runs_url": _url("ui.runs", job.query),
        "continue_url": url_for("ui.job_continue", job_id=job.id) if stalled else None,
    }


def summary(job: BulkJob) -> str:
    """The banner after a bulk action: ``Replayed 2 run(s): runs 6–7.``"""
    verb = "Replayed" if job.kind == "replay" else "Retried"
    how = "" if job.kind == "replay" else f" from the failed step on the {job.version} flow version"
    text = f"{verb} {len(job.run_ids):,} run(s){how}"
    text += f": runs {job.run_ids[0]}–{job.run_ids[-1]}." if job.run_ids else "."
    skipped = sum(job.skipped.values())
    if skipped:
        text += f" {skipped:,} of the filter's runs were skipped."
    return text + (f" {job.error}" if job.error else "")
