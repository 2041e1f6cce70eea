"""Execution (I4, I5, I7, I8): claims with leases, step and run writes, the reaper's due runs, ordering."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, true, update
from sqlalchemy.engine import Connection

from engine.errors import EngineError
from engine.model import TERMINAL, EventRecord, RunRecord, RunResult, RunStatus, StepResult, StepStatus
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


class LeaseLost(EngineError):
    """Another worker took this run over (our lease expired); stop without writing more."""



@dataclass
class Claim:
    """A run this worker now owns, with all it needs to continue.

    ``claim_at`` is set when the run was only read (a lazy claim of a fresh run): the first write
    passes it on and takes the run then, or finds it taken and raises LeaseLost.
    """

    run: RunRecord
    event: EventRecord
    source: str
    path: str
    steps: list[StepResult]
    claim_at: float | None = None



class ExecutionStore(StoreBase):
    # --- execution (I4, I5, I7, I8) ----------------------------------------------------------

    def claim(self, run_id: int, owner: str, lease_s: float, now: float | None = None,
              lazy: bool = False) -> Claim | None:
        """Take the run if it is runnable and not leased; None when someone else has it or it is done.

        ``lazy``: a fresh run (queued, no order key) is only read, and taken by the first write that
        passes ``claim.claim_at`` (one commit fewer per run: its pure steps need no lease). Two workers
        may then both read it; one write wins, the other gets LeaseLost and has written nothing.
        """
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
                        return Claim(_run_record(row), _event_record(row, "ev_"), row.source, row.path,
                                     [_step_result(r, True) for r in steps], claim_at=now)
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
            return Claim(_run_record(row), _event_record(ev), ev.source, ev.path, [_step_result(r, True) for r in steps])

    @staticmethod
    def _leased(c: Connection, run_id: int, owner: str, values: dict[str, Any], claim_at: float | None) -> None:
        """Update the run if it is leased to ``owner`` (or, with ``claim_at``, take it if still queued)."""
        if claim_at is None:
            res = c.execute(_LEASED, {"b_id": run_id, "b_owner": owner, **values})
        else:
            res = c.execute(_CLAIM_QUEUED, {"b_id": run_id, "started_at": claim_at, "lease_owner": owner,
                                            "reason": None, "status": RunStatus.RUNNING.value, **values})
        if res.rowcount != 1:
            raise LeaseLost(f"run {run_id} is no longer leased to {owner}" if claim_at is None
                            else f"run {run_id} was taken by another worker")

    def step_started(self, run_id: int, owner: str, result: StepResult, lease_until: float,
                     earlier: Sequence[StepResult] = (), completed: StepResult | None = None,
                     claim_at: float | None = None) -> None:
        """Record a step with side effects as running, in one commit with what came before it: the result
        of the previous call (``completed``, its `running` row) and the pure steps since (``earlier``).

        Synced to disk only when it carries a result (I5). A start alone is not (see _conn): only a power
        cut or a database crash can drop it, and then the call is made again as a first attempt with the
        same Idempotency-Key, as after any crash during a call.
        """
        with self._conn(durable=completed is not None) as c:
            self._leased(c, run_id, owner, {"lease_expires_at": lease_until, "updated_at": time.time(),
                                            "current_step": result.path}, claim_at)
            if completed is not None:
                self._complete(c, run_id, completed)
            c.execute(_INSERT_STEPS, [_step_values(run_id, r) for r in (*earlier, result)])

    @staticmethod
    def _complete(c: Connection, run_id: int, result: StepResult) -> None:
        values = _step_values(run_id, result)
        res = c.execute(_ATTEMPT, {"b_run": run_id, "b_step": result.path, "b_attempt": result.attempt,
                                   **{k: values[k] for k in _FINISHED_FIELDS}})
        if res.rowcount == 0:
            c.execute(_INSERT_STEPS, [values])

    def finish(self, run_id: int, owner: str, result: RunResult, now: float | None = None,
               steps: Sequence[StepResult] = (), completed: StepResult | None = None,
               claim_at: float | None = None) -> None:
        """Record the run's outcome (terminal, or WAITING with its next attempt time) and release the lease,
        with any step results not yet written (``steps``) and the result of the last step's `running`
        attempt (``completed``), in one commit."""
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
        with self._conn() as c:
            if steps:
                c.execute(_INSERT_STEPS, [_step_values(run_id, r) for r in steps])
            if completed is not None:
                self._complete(c, run_id, completed)
            self._leased(c, run_id, owner, values, claim_at)

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
