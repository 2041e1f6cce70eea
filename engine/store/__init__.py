"""The run store: the run history in SQLAlchemy 2.x (SQLite in WAL mode, or PostgreSQL via psycopg 3).

The database is the source of truth. Ingress commits the raw event and its run in one transaction
(I1); a unique (flow_id, dedupe_key) constraint makes duplicates impossible even across processes
(I2); workers claim runs with a lease that a single conditional UPDATE grants, so at most one worker
executes a run and a dead worker's run is taken over when the lease expires (I4). Every method opens
and commits its own transaction and returns engine.model dataclasses, never ORM rows. Database errors
leave the store as engine.errors exceptions: StoreUnavailable when the database cannot be reached.

The interfaces come first, as Protocols, one per reason to change; ``RunStore`` is the one backend,
composed of one part per interface (a module each) over StoreBase (engine/store/connect.py), which owns
the engine, the driver tuning and the transactions:

    ingest.py        Ingest          accept, flow versions
    execution.py     Execution       claim -> a Claim (the UnitOfWork of one execution), due_runs,
                     UnitOfWork      next_in_order; the Claim owns the write batching of a run
    history.py       History         get_run, list_runs, ids_matching, flow_stats, runs_by_ids, ...
    replay.py        Replay          create_linked_run(s), bulk jobs (create, advance, progress)
    retention.py     Retention       prune, reclaim_space
    destinations.py  Destinations    destination_admit / _settle, destination(s)
    sandbox.py       Sandbox         sandbox_record, sandbox_list
    alerts.py        engine.alerts.AlertLedger   claim_alert (once per failed run, rate-limited per flow)
    schema.py        the tables, their indexes, and the row -> engine.model converters
    connect.py       make_engine, begin_immediate, liveness checks, StoreBase
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from engine.destinations import Destination, Limits, Verdict
from engine.model import RunDetail, RunRecord, RunResult, Step, StepResult
from engine.store.alerts import AlertStore
from engine.store.connect import begin_immediate, make_engine
from engine.store.destinations import DestinationStore
from engine.store.execution import Claim, ExecutionStore, LeaseLost
from engine.store.history import HistoryStore, RunPage
from engine.store.ingest import Accepted, IngestStore
from engine.store.replay import BulkJob, Keep, ReplayStore
from engine.store.retention import RetentionStore
from engine.store.sandbox import SandboxStore
from engine.store.schema import (
    Base,
    DestinationRow,
    DestinationSlotRow,
    EventRow,
    FlowVersionRow,
    RunIndexRow,
    RunRow,
    SandboxRequestRow,
    StepRunRow,
)

__all__ = [
    "Accepted", "Base", "Claim", "DestinationRow", "DestinationSlotRow", "Destinations", "EventRow", "Execution",
    "FlowVersionRow", "History", "Ingest", "LeaseLost", "Replay", "Retention", "RunIndexRow", "RunPage", "RunRow",
    "RunStore", "Sandbox", "SandboxRequestRow", "StepRunRow", "UnitOfWork", "begin_immediate", "make_engine",
]


class Ingest(Protocol):
    """Webhooks in: the raw request and its run, committed before the 2xx (I1), once per dedupe key (I2)."""

    def accept(self, *, flow_id: str, version: str, source: str, path: str, method: str, query: str,
               headers: Sequence[tuple[str, str]], body: bytes, content_type: str, dedupe_key: str | None,
               order_key: str | None = None, index: dict[str, str] | None = None,
               now: float | None = None) -> Accepted:
        """Store the raw event (headers and body bytes as given) and a queued run in one synced commit.

        A second event with the same (flow_id, dedupe_key) stores nothing new: it counts a delivery on
        the first run and returns it with ``duplicate=True``. ``index`` values make the run findable by
        ``name:value``. The flow version's source is saved first if this process has not seen it (I10).
        """
        ...

    def save_flow_version(self, flow_id: str, version: str, source: str, path: str) -> None:
        """Keep a flow version's source (content-addressed; saving it twice is harmless)."""
        ...

    def flow_source(self, version: str) -> tuple[str, str, str] | None:
        """(flow_id, source, path) of a stored flow version, None when unknown."""
        ...


class Execution(Protocol):
    """Workers: at most one executes a run (a lease), a dead worker's run is taken over (I4)."""

    def claim(self, run_id: int, owner: str, lease_s: float, now: float | None = None, lazy: bool = False,
              default_timeout: float = 0.0) -> Claim | None:
        """The run's unit of work (a UnitOfWork), or None when it is leased, done, or waits its turn (I8).

        An attempt a dead worker left `running` is recorded failed (Interrupted) and counts as an attempt.
        ``lazy``: a fresh run is only read; the unit of work's first write takes it (LeaseLost if another
        worker's write took it first). The lease lasts ``lease_s`` plus the timeout of the calls in flight
        (``default_timeout`` when a step sets none).
        """
        ...

    def due_runs(self, now: float, queued_grace: float, requeue_after: float, limit: int = 500) -> list[int]:
        """Runs a reaper should enqueue (lease expired, retry overdue, queued too long), each once per window."""
        ...

    def next_in_order(self, flow_id: str, order_key: str) -> int | None:
        """The oldest unfinished run of an order key (I8), to enqueue once its predecessor ended."""
        ...


class UnitOfWork(Protocol):
    """One execution of one claimed run (engine.store.execution.Claim): the runner's Recorder, plus close.

    It owns the write batching: what is pending (results not yet written), what rides with the next write,
    and until when the lease must hold. Every method raises LeaseLost when the run is no longer ours.
    """

    def step_started(self, step: Step, path: str, attempt: int, started_at: float, idempotency_key: str) -> None:
        """Commit the attempt as running before its call, with every result kept since the last write;
        synced only when it carries a started attempt's result (I7)."""
        ...

    def step_finished(self, result: StepResult) -> None:
        """Keep an attempt's result for the next write (several attempts may be in flight)."""
        ...

    def close(self, result: RunResult, now: float | None = None) -> None:
        """Commit the outcome with every result not yet written and release the lease (one synced commit)."""
        ...


class History(Protocol):
    """What the pages and the API read: audit records only, never a step's resume state."""

    def get_run(self, run_id: int) -> RunDetail | None:
        """A run with its event, step rows (id order), linked children and index values."""
        ...

    def get_run_record(self, run_id: int) -> RunRecord | None:
        """The run row alone (status polling)."""
        ...

    def list_runs(self, *, flow: str | None = None, status: str | Sequence[str] | None = None,
                  since: float | None = None, until: float | None = None, q: str | None = None,
                  cursor: int | None = None, after: int | None = None, limit: int = 50) -> RunPage:
        """Newest first, keyset-paginated on id; ``q`` searches keys, index values, ids, then bodies."""
        ...

    def ids_matching(self, *, flow: str | None, status: str | None, since: float | None, until: float | None,
                     q: str | None = None, limit: int = 10_000) -> list[int]:
        """Run ids for a bulk action, oldest first."""
        ...

    def runs_by_ids(self, ids: Sequence[int]) -> list[RunRecord]:
        """The given runs that exist, newest first."""
        ...

    def unfinished_counts(self) -> dict[str, int]:
        """How many runs are queued, running and waiting."""
        ...

    def flow_stats(self, flow_ids: Sequence[str], since: float, bucket_s: float) -> dict[str, dict[str, Any]]:
        """Per flow: counts by status, volume per bucket since ``since``, and its last failure."""
        ...

    def run_notes(self, run_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Per shown run: the filter step that stopped it (``filtered_by``) and its replay/retry ``children``."""
        ...

    def unresolved_counts(self, flow_ids: Sequence[str], cap: int = 1000) -> dict[str, int]:
        """Per flow: failed runs no replay or retry has followed yet, counted up to ``cap``."""
        ...

    def step_stats(self, flow_id: str, since: float, max_runs: int) -> dict[str, tuple[int, int, dict[str, int]]]:
        """Per step path over the newest ``max_runs`` runs since ``since``: succeeded, failed for good, messages."""
        ...


class Replay(Protocol):
    """Operators: a new, linked run on the same event (I5: the parent is never run again)."""

    def create_linked_run(self, parent_id: int, kind: str, version: str, *, keep_done: bool = False,
                          now: float | None = None, keep: Keep | None = None) -> int:
        """One linked, queued run on ``version``; RunNotFound when the parent is gone. ``keep_done`` (a retry)
        copies the parent's records of paths done for good with their resume state (replay.kept)."""
        ...

    def create_linked_runs(self, parents: Sequence[tuple[int, str]], kind: str, *, keep_done: bool = False,
                           now: float | None = None, keep: Keep | None = None) -> list[int]:
        """Linked runs for many (parent id, flow version) pairs, in order; RunNotFound if a parent is gone.
        ``keep`` (a retry onto another version) narrows which kept records are copied (engine.bulk)."""
        ...

    def kept_ran(self, run_ids: Sequence[int]) -> dict[int, list[tuple[str, str]]]:
        """Per run, the (path, status) of what a retry would keep that ran (not skipped), in order."""
        ...

    def with_children(self, run_ids: Sequence[int]) -> set[int]:
        """Which of these runs were replayed or retried already."""
        ...

    def create_job(self, kind: str, version: str, parents: Sequence[tuple[int, str]], *,
                   skipped: dict[str, int] | None = None, query: dict[str, str] | None = None,
                   now: float | None = None) -> int:
        """A bulk replay or retry of ``parents`` (parent id, target version), nothing created yet."""
        ...

    def get_job(self, job_id: int) -> BulkJob | None:
        ...

    def advance_job(self, job: BulkJob, size: int, *, keep: Keep | None = None, followed: str | None = None,
                    now: float | None = None) -> list[int] | None:
        """The job's next ``size`` linked runs and its progress in one transaction; None when another
        process moved the job since ``job`` was read (nothing created: re-read and go on). With
        ``followed``, parents followed up meanwhile are skipped (counted under that reason), not linked."""
        ...

    def fail_job(self, job_id: int, error: str, now: float | None = None) -> None:
        ...


class Retention(Protocol):
    """Old history goes, in short transactions that let ingest and workers through."""

    def prune(self, *, succeeded_before: float, failed_before: float, batch: int = 500) -> Iterator[int]:
        """Delete terminal runs finished before the cut-offs (events with their last run); yields batch sizes."""
        ...

    def reclaim_space(self, full: bool = False) -> None:
        """SQLite: give free pages back to the file system (``full``: VACUUM once). Elsewhere nothing."""
        ...


class Destinations(Protocol):
    """Outbound protection state shared by all workers (engine.destinations decides, the store keeps)."""

    def destination_admit(self, origin: str, limits: Limits, holder: str, hold_s: float,
                          now: float | None = None) -> Verdict:
        """Atomically decide a call to ``origin``; when allowed, take a token and a slot held by ``holder``."""
        ...

    def destination_settle(self, origin: str, limits: Limits, holder: str, failed: bool,
                           now: float | None = None) -> Destination:
        """Free ``holder``'s slot and count the call's outcome towards the breaker."""
        ...

    def destination(self, origin: str) -> Destination | None:
        """One origin's state, None when it was never called through the gate."""
        ...

    def destinations(self) -> list[Destination]:
        """Every known origin with its live in-flight count (the operator page)."""
        ...


class Sandbox(Protocol):
    """The built-in receiver's requests, for trying flows without a real target."""

    def sandbox_record(self, name: str, method: str, path: str, headers: list[tuple[str, str]], body: str,
                       response_id: str) -> int:
        """Keep one received request; returns its id."""
        ...

    def sandbox_list(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Received requests, newest first, optionally of one receiver."""
        ...


class RunStore(IngestStore, ExecutionStore, HistoryStore, ReplayStore, RetentionStore, DestinationStore,
               SandboxStore, AlertStore):
    """The one store callers use: every part above over one engine (StoreBase)."""



if TYPE_CHECKING:  # mypy proves here that RunStore provides every interface above (never run)

    def _provides(store: RunStore) -> tuple[Ingest, Execution, History, Replay, Retention, Destinations, Sandbox]:
        return store, store, store, store, store, store, store

    def _works(claim: Claim) -> UnitOfWork:
        return claim


from engine import connection_store as _connection_store  # noqa: E402,F401  its table is part of the schema
