"""Replay (I5): a new queued run on the same event, linked to its parent; never the parent itself.

Bulk replays and retries are jobs (``bulk_jobs``): the parents and their target versions are written
first, then ``advance_job`` creates the next chunk of linked runs and moves the job's ``done`` in the
same transaction, on the condition that ``done`` is still what the caller read. So progress is in the
database for every web process to show, a job a dead process left half done can be carried on by
another, and two processes carrying on the same job never create a run twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, undefer

from engine.errors import RunNotFound
from engine.model import RunStatus
from engine.store.connect import StoreBase
from engine.store.schema import BulkJobRow, RunIndexRow, RunRow, StepRunRow, _step_result, _step_values

JOB_DAYS = 30
"""Bulk jobs are kept this long after their last progress (their runs stay as long as retention keeps them)."""

Keep = Callable[[str, str, str], bool]
"""(parent's flow version, new run's version, path) -> whether a retry copies that kept record (engine.bulk)."""

# What a retry keeps: a path ended for good with one of these (its resume state says so) is not run again.
# Failed paths run again, and so do the flow's error handler steps: the new run may fail differently.
KEPT_STATUSES = frozenset({"succeeded", "skipped", "continued"})
HANDLER_PREFIX = "on_failure."


def kept(path: str, state: Any) -> bool:
    """Whether a parent's step record is copied into a retry: done for good, and not an error handler's."""
    return (isinstance(state, dict) and state.get("status") in KEPT_STATUSES
            and not path.startswith(HANDLER_PREFIX))


@dataclass(frozen=True)
class BulkJob:
    """A bulk replay or retry and its progress."""

    id: int
    kind: str
    version: str
    total: int
    done: int
    run_ids: list[int]
    skipped: dict[str, int]
    query: dict[str, str]
    error: str | None
    created_at: float
    updated_at: float
    parents: list[tuple[int, str]] = field(default_factory=list, repr=False)

    @property
    def finished(self) -> bool:
        return self.done >= self.total or self.error is not None


def _job(row: BulkJobRow) -> BulkJob:
    return BulkJob(id=row.id, kind=row.kind, version=row.version, total=row.total, done=row.done,
                   run_ids=list(row.run_ids), skipped=dict(row.skipped), query=dict(row.query), error=row.error,
                   created_at=row.created_at, updated_at=row.updated_at,
                   parents=[(int(p), str(v)) for p, v in row.parents])


class ReplayStore(StoreBase):
    def create_linked_run(self, parent_id: int, kind: str, version: str, *, keep_done: bool = False,
                          now: float | None = None, keep: Keep | None = None) -> int:
        """A new queued run on the same event, linked to its parent.

        ``keep_done`` (retry from the failed step): the parent's records of paths done for good (``kept``)
        are copied with their resume state, so the new run continues from them rather than repeating them.
        """
        return self.create_linked_runs([(parent_id, version)], kind, keep_done=keep_done, now=now, keep=keep)[0]

    def create_linked_runs(self, parents: Sequence[tuple[int, str]], kind: str, *, keep_done: bool = False,
                           now: float | None = None, keep: Keep | None = None) -> list[int]:
        """Linked runs for many (parent id, flow version) pairs, 500 per transaction; RunNotFound if a parent is gone.

        ``keep`` narrows what ``keep_done`` copies (a retry on another flow version: engine.versions).
        """
        now = time.time() if now is None else now
        new_ids: list[int] = []
        for start in range(0, len(parents), 500):
            with self._tx() as s:
                new_ids += self._link(s, parents[start : start + 500], kind, keep_done, keep, now)
        return new_ids

    def _link(self, s: Session, chunk: Sequence[tuple[int, str]], kind: str, keep_done: bool, keep: Keep | None,
              now: float) -> list[int]:
        rows = {r.id: r for r in s.execute(select(RunRow).where(RunRow.id.in_([p for p, _ in chunk]))).scalars()}
        created: list[tuple[int, RunRow]] = []
        for parent_id, version in chunk:
            parent = rows.get(parent_id)
            if parent is None:
                raise RunNotFound(parent_id)
            run = RunRow(flow_id=parent.flow_id, flow_version=version, event_id=parent.event_id,
                         status=RunStatus.QUEUED.value, dedupe_key=None, order_key=parent.order_key,
                         created_at=now, updated_at=now, parent_run_id=parent.id, replay_kind=kind)
            s.add(run)
            created.append((parent_id, run))
        s.flush()
        by_parent = {parent_id: run.id for parent_id, run in created}
        versions = {parent_id: (rows[parent_id].flow_version, run.flow_version) for parent_id, run in created}
        for idx in s.execute(select(RunIndexRow).where(RunIndexRow.run_id.in_(list(by_parent)))).scalars():
            s.add(RunIndexRow(run_id=by_parent[idx.run_id], name=idx.name, value=idx.value))
        if keep_done:
            # the resume state is the one reason to read the column here (pages never do)
            steps = s.execute(select(StepRunRow).options(undefer(StepRunRow.state))
                              .where(StepRunRow.run_id.in_(list(by_parent))).order_by(StepRunRow.id))
            for row in steps.scalars():
                if kept(row.path, row.state) and (keep is None or keep(*versions[row.run_id], row.path)):
                    s.add(StepRunRow(**_step_values(by_parent[row.run_id], _step_result(row, True))))
        return [run.id for _, run in created]

    def kept_ran(self, run_ids: Sequence[int]) -> dict[int, list[tuple[str, str]]]:
        """Per run, the (path, status) of what a retry would keep that ran: succeeded, or failed under
        ``on_error: continue`` (skipped paths sent nothing). In the order they ran; 500 runs per read."""
        out: dict[int, list[tuple[str, str]]] = {i: [] for i in run_ids}
        for start in range(0, len(run_ids), 500):
            with self._tx(write=False) as s:
                rows = s.execute(select(StepRunRow.run_id, StepRunRow.path, StepRunRow.state)
                                 .where(StepRunRow.run_id.in_(list(run_ids[start : start + 500])))
                                 .order_by(StepRunRow.id))
                for run_id, path, state in rows:
                    if kept(path, state) and state["status"] != "skipped":
                        out[run_id].append((path, state["status"]))
        return out

    def with_children(self, run_ids: Sequence[int]) -> set[int]:
        """Which of these runs were replayed or retried already (an ``ix_runs_parent`` probe per 500)."""
        found: set[int] = set()
        for start in range(0, len(run_ids), 500):
            with self._tx(write=False) as s:
                rows = s.execute(select(RunRow.parent_run_id).distinct()
                                 .where(RunRow.parent_run_id.in_(list(run_ids[start : start + 500]))))
                found.update(p for p in rows.scalars() if p is not None)
        return found

    # --- bulk jobs ------------------------------------------------------------------------------

    def create_job(self, kind: str, version: str, parents: Sequence[tuple[int, str]], *,
                   skipped: dict[str, int] | None = None, query: dict[str, str] | None = None,
                   now: float | None = None) -> int:
        """A new job, nothing created yet; jobs untouched for JOB_DAYS go at the same time (bounded table)."""
        now = time.time() if now is None else now
        with self._tx() as s:
            s.execute(delete(BulkJobRow).where(BulkJobRow.updated_at < now - JOB_DAYS * 86400))
            row = BulkJobRow(kind=kind, version=version, parents=[list(p) for p in parents], total=len(parents),
                             done=0, run_ids=[], skipped=skipped or {}, query=query or {}, created_at=now,
                             updated_at=now)
            s.add(row)
            s.flush()
            return int(row.id)

    def get_job(self, job_id: int) -> BulkJob | None:
        with self._tx(write=False) as s:
            row = s.get(BulkJobRow, job_id)
            return _job(row) if row else None

    def advance_job(self, job: BulkJob, size: int, *, keep: Keep | None = None, followed: str | None = None,
                    now: float | None = None) -> list[int] | None:
        """Create the next ``size`` linked runs of ``job`` (as read) and move its ``done``, in one transaction.

        None when another process moved it first (nothing was created here); re-read the job and go on.
        ``followed`` (a bulk retry): parents replayed or retried since the job was planned (the same
        confirm submitted twice, two operators) are left out and counted as skipped for that reason, so
        no run is retried twice by bulk retries; the parents are locked while this is decided.
        """
        now = time.time() if now is None else now
        chunk = job.parents[job.done : job.done + size]
        with self._tx() as s:
            moved = s.execute(update(BulkJobRow).where(BulkJobRow.id == job.id, BulkJobRow.done == job.done)
                              .values(done=job.done + len(chunk), updated_at=now))
            if getattr(moved, "rowcount", 0) != 1:
                return None
            late: set[int] = set()
            if followed is not None and chunk:
                ids = [p for p, _ in chunk]
                s.execute(select(RunRow.id).where(RunRow.id.in_(ids)).order_by(RunRow.id).with_for_update())
                late = {p for p in s.execute(select(RunRow.parent_run_id).where(RunRow.parent_run_id.in_(ids)))
                        .scalars() if p is not None}
            new_ids = self._link(s, [pair for pair in chunk if pair[0] not in late], job.kind, job.kind == "retry",
                                 keep, now)
            values: dict[str, Any] = {"run_ids": job.run_ids + new_ids}
            if late and followed is not None:
                values["skipped"] = {**job.skipped, followed: job.skipped.get(followed, 0) + len(late)}
            s.execute(update(BulkJobRow).where(BulkJobRow.id == job.id).values(**values))
        return new_ids

    def stalled_jobs(self, before: float, limit: int = 10) -> list[int]:
        """Unfinished, not failed jobs nobody has moved since ``before``: their process died mid-way."""
        with self._tx(write=False) as s:
            rows = s.execute(select(BulkJobRow.id).where(BulkJobRow.error.is_(None), BulkJobRow.done < BulkJobRow.total,
                                                         BulkJobRow.updated_at < before)
                             .order_by(BulkJobRow.id).limit(limit))
            return [int(i) for i in rows.scalars()]

    def fail_job(self, job_id: int, error: str, now: float | None = None) -> None:
        with self._tx() as s:
            s.execute(update(BulkJobRow).where(BulkJobRow.id == job_id)
                      .values(error=error, updated_at=time.time() if now is None else now))
