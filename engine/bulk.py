"""Bulk replay and bulk retry-from-failed-step, and what a retry on another flow version keeps.

A bulk action is planned first (which runs, on which version, which are skipped and why: the confirm
page shows exactly that), then written as a job (engine.store.replay) and carried out in chunks of
``chunk`` runs, each chunk one transaction that also moves the job's progress. Any web process can show
the progress and carry a job on; a chunk is never created twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.errors import EngineError, FlowNotLoaded, RunNotFound, StepChanged, StoreError
from engine.model import Flow, RunRecord, RunStatus
from engine.store.replay import BulkJob, Keep
from engine.versions import Compatibility

if TYPE_CHECKING:
    from engine.service import Service

log = logging.getLogger("hookline.bulk")

NOT_FAILED = "not failed (only failed runs are retried from the failed step)"
FOLLOWED = "already replayed or retried (the newest follow-up carries the failure)"
CHANGED = "a call they kept changed or moved in the current flow version (retry those on their original version)"

STALLED_S = 30.0
"""A job unmoved this long lost its process: its page offers to carry it on, and a worker's reaper does."""


@dataclass
class Plan:
    """What a bulk action will do: (parent, flow version) pairs in order, and the runs it leaves out, by reason."""

    kind: str
    original_version: bool
    pairs: list[tuple[int, str]]
    runs: list[RunRecord]
    skipped: dict[str, list[int]] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return "original" if self.original_version else "current"

    def skipped_counts(self) -> dict[str, int]:
        return {reason: len(ids) for reason, ids in self.skipped.items() if ids}


def records(svc: Service, run_ids: Sequence[int]) -> list[RunRecord]:
    """The runs in the given order; RunNotFound for the first one missing (nothing is created then)."""
    found = {r.id: r for start in range(0, len(run_ids), 500)
             for r in svc.store.runs_by_ids(run_ids[start : start + 500])}
    missing = [i for i in run_ids if i not in found]
    if missing:
        raise RunNotFound(missing[0])
    return [found[i] for i in run_ids]


def _targets(svc: Service, runs: Sequence[RunRecord], original_version: bool, remedy: str) -> dict[str, str]:
    """Flow id -> the version runs go to (the current one; FlowNotLoaded when a flow is not loaded)."""
    if original_version:
        return {}
    return {flow_id: svc.current_version(flow_id, remedy) for flow_id in sorted({r.flow_id for r in runs})}


def plan_replay(svc: Service, run_ids: Sequence[int], *, original_version: bool) -> Plan:
    runs = records(svc, run_ids)
    targets = _targets(svc, runs, original_version, "nothing was replayed; replay on the original version instead")
    pairs = [(r.id, r.flow_version if original_version else targets[r.flow_id]) for r in runs]
    return Plan("replay", original_version, pairs, runs)


def plan_retry(svc: Service, run_ids: Sequence[int], *, original_version: bool) -> Plan:
    """Failed runs not yet followed up; on the current version, only those whose kept calls are unchanged there."""
    runs = records(svc, run_ids)
    skipped: dict[str, list[int]] = {NOT_FAILED: [], FOLLOWED: [], CHANGED: []}
    failed = [r for r in runs if r.status is RunStatus.FAILED]
    skipped[NOT_FAILED] = [r.id for r in runs if r.status is not RunStatus.FAILED]
    followed = svc.store.with_children([r.id for r in failed])
    skipped[FOLLOWED] = [r.id for r in failed if r.id in followed]
    chosen = [r for r in failed if r.id not in followed]
    targets = _targets(svc, chosen, original_version, "nothing was retried; retry on the original version instead")
    if not original_version:
        by_id = {r.id: r for r in chosen}
        kept = svc.store.kept_ran([r.id for r in chosen if r.flow_version != targets[r.flow_id]])
        blocked = {run_id for run_id, ran in kept.items() if conflicts(svc, by_id[run_id], targets, ran)}
        skipped[CHANGED] = [r.id for r in chosen if r.id in blocked]
        chosen = [r for r in chosen if r.id not in blocked]
    pairs = [(r.id, r.flow_version if original_version else targets[r.flow_id]) for r in chosen]
    return Plan("retry", original_version, pairs, chosen, skipped)


def conflicts(svc: Service, run: RunRecord, targets: dict[str, str], ran: Sequence[tuple[str, str]]) -> list[str]:
    """Why each kept call of ``run`` (path, status) blocks a retry on its flow's target version (empty: none)."""
    compat = compatibility(svc, run.flow_version, targets[run.flow_id])
    if compat is None:
        return []
    return [why for why in (compat.conflict(path, status) for path, status in ran) if why is not None]


def check_retry(svc: Service, run: RunRecord, version: str) -> None:
    """StepChanged naming the first kept call a retry of ``run`` on ``version`` would have to send again."""
    if version == run.flow_version:
        return
    reasons = conflicts(svc, run, {run.flow_id: version}, svc.store.kept_ran([run.id])[run.id])
    if reasons:
        raise StepChanged(run.id, reasons[0])


_COMPAT: dict[tuple[str, str], Compatibility] = {}


def compatibility(svc: Service, old: str, new: str) -> Compatibility | None:
    """What a retry from ``old`` onto ``new`` keeps; None for the same version (everything kept)."""
    if old == new:
        return None
    found = _COMPAT.get((old, new))
    if found is None:  # shared by request and job threads: never read back what another may clear
        found = Compatibility(_flow(svc, old), _flow(svc, new))
        if len(_COMPAT) >= 64:
            _COMPAT.clear()
        _COMPAT[(old, new)] = found
    return found


def _flow(svc: Service, version: str) -> Flow:
    stored = svc.store.flow_source(version)
    if stored is None:  # a run's version is stored with it (I10): only a hand-edited database gets here
        raise FlowNotLoaded(f"version {version}", "its source is not stored")
    return svc.flow_version(version, stored[1], stored[2])


def keeper(svc: Service) -> Keep:
    """The store's ``keep`` predicate: (parent's version, new run's version, path) -> copy that kept record."""

    def keep(old: str, new: str, path: str) -> bool:
        compat = compatibility(svc, old, new)
        return compat is None or compat.keeps(path)

    return keep


# --- jobs ---------------------------------------------------------------------------------------


def start(svc: Service, plan: Plan, query: dict[str, str]) -> int:
    """Write the plan as a job; nothing is created yet (``advance`` does that)."""
    return svc.store.create_job(plan.kind, plan.version, plan.pairs, skipped=plan.skipped_counts(), query=query)


def advance(svc: Service, job_id: int, size: int | None = None) -> BulkJob:
    """Create the job's next chunk and queue its runs; a failure (a parent pruned meanwhile) stops the job."""
    job = svc.store.get_job(job_id)
    if job is None:
        raise RunNotFound(job_id)
    if job.finished:
        return job
    try:
        retry = job.kind == "retry"
        new_ids = svc.store.advance_job(job, size or svc.bulk_chunk, keep=keeper(svc) if retry else None,
                                        followed=FOLLOWED if retry else None)
    except StoreError:
        raise  # the database, not the job: it stays unfinished and can be carried on (its page offers it)
    except EngineError as exc:
        log.warning("bulk %s %s stopped at %d of %d: %s", job.kind, job_id, job.done, job.total, exc)
        svc.store.fail_job(job_id, f"stopped after {job.done:,} of {job.total:,}: {exc}")
        new_ids = []
    for new_id in new_ids or ():
        svc._enqueue(new_id, 0.0)
    again = svc.store.get_job(job_id)
    assert again is not None
    return again


def run(svc: Service, job_id: int) -> BulkJob:
    """Advance until the job is finished (another process advancing it too only shares the chunks)."""
    while True:
        job = advance(svc, job_id)
        if job.finished:
            return job
