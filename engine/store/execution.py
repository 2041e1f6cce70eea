"""Execution (I4, I5, I7, I8): claims with leases, the unit of work that writes a run, due runs, ordering."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, true, update

from engine.errors import LeaseLost as LeaseLost  # engine.store.LeaseLost, as before it moved to engine.errors
from engine.model import TERMINAL, EventRecord, RunRecord, RunResult, RunStatus, Step, StepResult, StepStatus
from engine.store.connect import StoreBase
from engine.store.schema import (
    RunRow,
    _event_record,
    _events,
    _run_record,
    _runs,
    _step_result,
    _step_values,
    _steps,
    _versions,
)
from engine.templating import clean_text

# Built once, like ingest's (see there): the statements of every claim and every write of a run.
_INSERT_STEPS = insert(_steps)
_CLAIM = update(_runs).where(
    _runs.c.id == bindparam("b_id"),
    or_(
        _runs.c.status == RunStatus.QUEUED.value,
        and_(_runs.c.status == RunStatus.WAITING.value,
             or_(_runs.c.next_attempt_at.is_(None), _runs.c.next_attempt_at <= bindparam("b_soon"))),
        and_(_runs.c.status == RunStatus.RUNNING.value, _runs.c.lease_expires_at < bindparam("b_now")),
    ),
).values(
    status=RunStatus.RUNNING.value, lease_owner=bindparam("b_owner"), lease_expires_at=bindparam("b_until"),
    started_at=func.coalesce(_runs.c.started_at, bindparam("b_now")), updated_at=bindparam("b_now"), reason=None,
).returning(*_runs.c)
_BLOCKER = select(_runs.c.id).where(
    _runs.c.flow_id == bindparam("b_flow"), _runs.c.order_key == bindparam("b_key"), _runs.c.id < bindparam("b_id"),
    _runs.c.status.not_in([t.value for t in TERMINAL]),
).order_by(_runs.c.id).limit(1)
_RUN_BY_ID = update(_runs).where(_runs.c.id == bindparam("b_id"))
# a lazy claim: a fresh run with its event and flow source in one read; the first write takes it if still queued
_FRESH_RUN = select(_runs, *[c.label(f"ev_{c.name}") for c in _events.c], _versions.c.source,
                    _versions.c.path).select_from(
    _runs.join(_events, _events.c.id == _runs.c.event_id).join(_versions, _versions.c.version == _runs.c.flow_version)
).where(_runs.c.id == bindparam("b_id"))
_CLAIM_QUEUED = update(_runs).where(_runs.c.id == bindparam("b_id"), _runs.c.status == RunStatus.QUEUED.value)
_LEASED = update(_runs).where(_runs.c.id == bindparam("b_id"), _runs.c.lease_owner == bindparam("b_owner"),
                              _runs.c.status == RunStatus.RUNNING.value)
_STEPS_OF = select(_steps).where(_steps.c.run_id == bindparam("b_run")).order_by(_steps.c.id)
_INTERRUPT = update(_steps).where(_steps.c.run_id == bindparam("b_run"), _steps.c.status == StepStatus.RUNNING.value)
_ATTEMPT = update(_steps).where(_steps.c.run_id == bindparam("b_run"), _steps.c.path == bindparam("b_step"),
                                _steps.c.attempt == bindparam("b_attempt"))
_EVENT_AND_SOURCE = select(_events, _versions.c.source, _versions.c.path).select_from(
    _events.join(_versions, true())  # two primary-key lookups in one round trip
).where(
    _events.c.id == bindparam("b_event"), _versions.c.version == bindparam("b_version"))
_FINISHED_FIELDS = ("status", "finished_at", "input", "output", "request", "response", "error_type", "error_message",
                    "retry_at", "idempotency_key", "state")
_INTERRUPTED = ("the worker stopped during this attempt; it is retried with the same Idempotency-Key")


class Claim:
    """The unit of work of one execution of a run: what it needs to continue, and every write it makes.

    It backs the runner's Recorder (engine.runner) and owns the write batching: a step with side effects
    commits its start before it runs (step_started: not synced to disk, see StoreBase._conn) and its result
    rides with the next write, the next start (synced) or the run's outcome (close). Results of pure steps
    (filter, transform) ride with the next write too: they are cheap to recompute. So every result is synced
    before the next call starts (I7) and a crash repeats only calls whose result was not committed, with the
    same Idempotency-Key (I6). Several attempts may be in flight at once (a foreach with ``concurrency``): every
    result that arrived by the next write rides with it. The runner serializes the calls, so no lock here.

    A fresh run is claimed lazily (``claim_at`` set): the first write takes it, or raises LeaseLost when
    another worker's write took it first. So a run with N calls commits N + 1 times (a one-call run: start,
    outcome), and only the first of those skips the flush. Every write renews the lease to ``lease_s`` plus
    the longest timeout among the calls in flight (``lease_until``); a write after losing it raises LeaseLost.
    """

    def __init__(self, store: StoreBase, owner: str, run: RunRecord, event: EventRecord, source: str, path: str,
                 steps: list[StepResult], *, lease_s: float, default_timeout: float,
                 claim_at: float | None = None) -> None:
        self.run, self.event, self.source, self.path, self.steps = run, event, source, path, steps
        self.owner = owner
        self.claim_at = claim_at  # a lazy claim: the first write takes the run (then None)
        self.lease_until = run.lease_expires_at
        self.pending: list[StepResult] = []  # results of steps never started in the store (pure steps)
        self.completed: list[StepResult] = []  # results of started attempts: the next write completes their rows
        self._store, self._lease_s, self._default_timeout = store, lease_s, default_timeout
        self._in_flight: dict[tuple[str, int], float] = {}  # started attempts -> their call's timeout

    def step_started(self, step: Step, path: str, attempt: int, started_at: float, idempotency_key: str) -> None:
        """Commit a call's start (the run's lease renewed) with every result that arrived since the last write.

        Synced to disk only when it carries the result of a started attempt (I5). A start alone is not: only
        a power cut or a database crash can drop it, and then the call is made again as a first attempt with
        the same Idempotency-Key, as after any crash during a call.
        """
        self._in_flight[(path, attempt)] = getattr(step.config, "timeout", None) or self._default_timeout
        now = time.time()
        until = now + self._lease_s + max(self._in_flight.values())
        running = StepResult(path, StepStatus.RUNNING, attempt, step.index, started_at=started_at,
                             idempotency_key=idempotency_key)
        self._write({"lease_expires_at": until, "updated_at": now, "current_step": path}, running,
                    durable=bool(self.completed))
        self.lease_until = until

    def step_finished(self, result: StepResult) -> None:
        """Keep an attempt's result for the next write (a started one completes its `running` row)."""
        if (result.path, result.attempt) in self._in_flight:
            del self._in_flight[(result.path, result.attempt)]
            self.completed.append(result)
        else:
            self.pending.append(result)

    def close(self, result: RunResult, now: float | None = None) -> None:
        """Commit the run's outcome (terminal, or WAITING with its next attempt time) with every result not yet
        written, and release the lease: one synced commit. LeaseLost if the run is no longer ours."""
        now = time.time() if now is None else now
        terminal = result.status in TERMINAL
        error = clean_text(result.error) if result.error else None
        values: dict[str, Any] = {
            "status": result.status.value, "updated_at": now, "finished_at": now if terminal else None,
            "error": error, "next_attempt_at": None if terminal else result.next_attempt_at,
            "reason": None if terminal else error, "lease_owner": None, "lease_expires_at": None,
        }
        if terminal:
            values["current_step"] = None
        self._write(values, None, durable=True)
        self.lease_until = None

    def _write(self, values: dict[str, Any], running: StepResult | None, durable: bool) -> None:
        """One transaction: the run row if still ours (or taken now, lazily), then what is pending."""
        run_id = self.run.id
        with self._store._conn(durable=durable) as c:
            if self.claim_at is None:
                res = c.execute(_LEASED, {"b_id": run_id, "b_owner": self.owner, **values})
            else:
                res = c.execute(_CLAIM_QUEUED, {"b_id": run_id, "started_at": self.claim_at, "reason": None,
                                                "lease_owner": self.owner, "status": RunStatus.RUNNING.value, **values})
            if res.rowcount != 1:
                raise LeaseLost(f"run {run_id} is no longer leased to {self.owner}" if self.claim_at is None
                                else f"run {run_id} was taken by another worker")
            for done in self.completed:
                finished = _step_values(run_id, done)
                if c.execute(_ATTEMPT, {"b_run": run_id, "b_step": done.path, "b_attempt": done.attempt,
                                        **{k: finished[k] for k in _FINISHED_FIELDS}}).rowcount == 0:
                    c.execute(_INSERT_STEPS, [finished])
            rows = [*self.pending, running] if running is not None else self.pending
            if rows:
                c.execute(_INSERT_STEPS, [_step_values(run_id, r) for r in rows])
        self.pending, self.completed, self.claim_at = [], [], None


class ExecutionStore(StoreBase):
    def claim(self, run_id: int, owner: str, lease_s: float, now: float | None = None, lazy: bool = False,
              default_timeout: float = 0.0) -> Claim | None:
        """Take the run if it is runnable and not leased; None when someone else has it or it is done.

        The Claim is the unit of work that writes the run from here on. ``lazy``: a fresh run (queued, no
        order key) is only read, and taken by the Claim's first write (one commit fewer per run: its pure
        steps need no lease). Two workers may then both read it; one write wins, the other gets LeaseLost
        and has written nothing. ``default_timeout`` is a call's timeout when its step sets none: the lease
        covers it.
        """
        lease = {"lease_s": lease_s, "default_timeout": default_timeout}
        now = time.time() if now is None else now
        if lazy:
            with self._unavailable(), self.engine.begin() as c:
                row = c.execute(_FRESH_RUN, {"b_id": run_id}).first()
                if row is None or RunStatus(row.status) in TERMINAL:  # a late duplicate message: no write lock
                    return None
                if row.status == RunStatus.QUEUED.value and row.order_key is None:
                    # only a replay's run starts with steps (copied from its parent, all done)
                    steps = c.execute(_STEPS_OF, {"b_run": run_id}).all() if row.parent_run_id is not None else []
                    if not any(r.status == StepStatus.RUNNING.value for r in steps):
                        return Claim(self, owner, _run_record(row), _event_record(row, "ev_"), row.source, row.path,
                                     [_step_result(r, True) for r in steps], claim_at=now, **lease)
        with self._conn() as c:
            row = c.execute(_CLAIM, {"b_id": run_id, "b_now": now, "b_soon": now + 0.5, "b_owner": owner,
                                     "b_until": now + lease_s}).first()
            if row is None:
                return None
            if row.order_key is not None:
                blocker = c.execute(_BLOCKER, {"b_flow": row.flow_id, "b_key": row.order_key, "b_id": run_id}).scalar()
                if blocker is not None:
                    c.execute(_RUN_BY_ID, {"b_id": run_id, "status": RunStatus.WAITING.value, "lease_owner": None,
                                           "lease_expires_at": None, "next_attempt_at": None,
                                           "reason": f"waiting for run {blocker} (same order key)"})
                    return None
            steps = c.execute(_STEPS_OF, {"b_run": run_id}).all()
            if any(r.status == StepStatus.RUNNING.value for r in steps):
                # an attempt left `running` by a dead worker is recorded as interrupted; it counts as an attempt
                c.execute(_INTERRUPT, {"b_run": run_id, "status": StepStatus.FAILED.value, "finished_at": now,
                                       "error_type": "Interrupted", "error_message": _INTERRUPTED})
                steps = c.execute(_STEPS_OF, {"b_run": run_id}).all()
            ev = c.execute(_EVENT_AND_SOURCE, {"b_event": row.event_id, "b_version": row.flow_version}).one()
            return Claim(self, owner, _run_record(row), _event_record(ev), ev.source, ev.path,
                         [_step_result(r, True) for r in steps], **lease)

    def due_runs(self, now: float, queued_grace: float, requeue_after: float, limit: int = 500) -> list[int]:
        """Runs a worker should pick up (lease expired, retry overdue, queued too long), each handed out
        once per ``requeue_after`` seconds across all reapers of all processes.

        The hand-out is recorded in the same conditional UPDATE that selects, so two reapers racing
        never both re-enqueue a run, and the queue is not flooded with copies while it is taken over.
        """
        due = or_(
            and_(RunRow.status == RunStatus.RUNNING.value, RunRow.lease_expires_at < now),
            and_(RunRow.status == RunStatus.WAITING.value, RunRow.next_attempt_at.is_not(None),
                 RunRow.next_attempt_at <= now - 1.0),
            and_(RunRow.status == RunStatus.QUEUED.value, RunRow.created_at <= now - queued_grace),
            and_(RunRow.status == RunStatus.WAITING.value, RunRow.next_attempt_at.is_(None),
                 RunRow.updated_at <= now - queued_grace),
        )
        fresh = or_(RunRow.requeued_at.is_(None), RunRow.requeued_at <= now - requeue_after)
        with self._tx(write=False) as s:  # the common case, nothing due, takes no write lock
            ids = list(s.execute(select(RunRow.id).where(due, fresh).order_by(RunRow.id).limit(limit)).scalars())
        if not ids:
            return []
        with self._tx() as s:
            taken = s.execute(update(RunRow).where(RunRow.id.in_(ids), due, fresh).values(requeued_at=now)
                              .returning(RunRow.id)).scalars().all()
            return sorted(taken)

    def next_in_order(self, flow_id: str, order_key: str) -> int | None:
        """The oldest unfinished run of an order key, to start once its predecessor ended."""
        with self._tx(write=False) as s:
            return s.execute(
                select(RunRow.id).where(RunRow.flow_id == flow_id, RunRow.order_key == order_key,
                                        RunRow.status.not_in([t.value for t in TERMINAL]))
                .order_by(RunRow.id).limit(1)
            ).scalar()
