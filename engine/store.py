"""RunStore: the run history in SQLAlchemy 2.x (SQLite in WAL mode, or PostgreSQL via psycopg 3).

The database is the source of truth. Ingress commits the raw event and its run in one
transaction (I1); a unique (flow_id, dedupe_key) constraint makes duplicates impossible even
across processes (I2); workers claim runs with a lease that a single conditional UPDATE grants,
so at most one worker executes a run and a dead worker's run is taken over when the lease
expires (I4). Every method opens and commits its own transaction and returns engine.model
dataclasses, never ORM rows. Connection failures become StoreUnavailable.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from select import POLLIN, poll
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from engine.destinations import Destination, Limits, Verdict, admit, settle
from engine.errors import EngineError, StoreUnavailable
from engine.model import (
    TERMINAL,
    EventRecord,
    RunDetail,
    RunRecord,
    RunResult,
    RunStatus,
    StepResult,
    StepStatus,
)
from engine.templating import clean_text

BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite only autoincrements INTEGER PRIMARY KEY


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


class Base(DeclarativeBase):
    pass


class FlowVersionRow(Base):
    __tablename__ = "flow_versions"
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class EventRow(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    flow_id: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(10))
    query: Mapped[str] = mapped_column(Text, default="")
    headers: Mapped[list[Any]] = mapped_column(JSON)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str] = mapped_column(String(200), default="")


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    flow_id: Mapped[str] = mapped_column(String(100))
    flow_version: Mapped[str] = mapped_column(ForeignKey("flow_versions.version"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    dedupe_key: Mapped[str | None] = mapped_column(String(500))
    order_key: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    next_attempt_at: Mapped[float | None] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    parent_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    replay_kind: Mapped[str | None] = mapped_column(String(16))
    current_step: Mapped[str | None] = mapped_column(String(100))
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    requeued_at: Mapped[float | None] = mapped_column(Float)  # when a reaper last re-enqueued it

    __table_args__ = (
        UniqueConstraint("flow_id", "dedupe_key", name="uq_runs_flow_dedupe"),
        CheckConstraint("status IN ('queued','running','waiting','succeeded','failed','filtered')",
                        name="ck_runs_status"),
        Index("ix_runs_flow_id_id", "flow_id", "id"),
        Index("ix_runs_status_id", "status", "id"),
        Index("ix_runs_flow_status_id", "flow_id", "status", "id"),
        Index("ix_runs_created_at", "created_at"),
        Index("ix_runs_flow_created", "flow_id", "created_at"),
        # partial: most runs have neither an order key nor a parent, and every index entry is a page
        # written (and synced) at ingest; the queries on them (order_by blockers, replay children)
        # compare the column with a value, which implies IS NOT NULL on both databases
        Index("ix_runs_order", "flow_id", "order_key", "id", sqlite_where=text("order_key IS NOT NULL"),
              postgresql_where=text("order_key IS NOT NULL")),
        Index("ix_runs_parent", "parent_run_id", sqlite_where=text("parent_run_id IS NOT NULL"),
              postgresql_where=text("parent_run_id IS NOT NULL")),
        Index("ix_runs_dedupe_key", "dedupe_key"),
    )


class StepRunRow(Base):
    __tablename__ = "step_runs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(500))
    position: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    input: Mapped[Any] = mapped_column(JSON, nullable=True)
    output: Mapped[Any] = mapped_column(JSON, nullable=True)
    request: Mapped[Any] = mapped_column(JSON, nullable=True)
    response: Mapped[Any] = mapped_column(JSON, nullable=True)
    error_type: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_at: Mapped[float | None] = mapped_column(Float)
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    # resume state (StepResult.state): read back only by claims, never by pages or the API
    state: Mapped[Any] = mapped_column(JSON, nullable=True)

    __table_args__ = (
        UniqueConstraint("run_id", "path", "attempt", name="uq_step_runs_attempt"),
        CheckConstraint("status IN ('running','succeeded','failed','skipped','filtered')", name="ck_step_runs_status"),
    )


class RunIndexRow(Base):
    """Values of ``trigger.index`` fields, so runs of one order are found among millions."""

    __tablename__ = "run_index"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(500))
    __table_args__ = (Index("ix_run_index_name_value", "name", "value"),)


class SandboxRequestRow(Base):
    """Requests received by the built-in sandbox receiver."""

    __tablename__ = "sandbox_requests"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(Text)
    headers: Mapped[list[Any]] = mapped_column(JSON)
    body: Mapped[str] = mapped_column(Text)
    response_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ix_sandbox_name_id", "name", "id"),)


class DestinationRow(Base):
    """Shared protection state of one outbound host (engine.destinations)."""

    __tablename__ = "destinations"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="closed")
    failures: Mapped[int] = mapped_column(Integer, default=0)
    open_until: Mapped[float] = mapped_column(Float, default=0.0)
    tokens: Mapped[float] = mapped_column(Float, default=0.0)
    tokens_at: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[float] = mapped_column(Float, default=0.0)


class DestinationSlotRow(Base):
    """A request in flight to a host (concurrency limits); expires so a dead worker's slot frees itself."""

    __tablename__ = "destination_slots"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float)


# --- the hot path's statements, built once --------------------------------------------------------
# A worker runs these several times per run and ingress once per event. Built per call as ORM
# statements they cost ~4x the database work (statement construction, cache keys, unit of work);
# built once, SQLAlchemy's compiled cache serves them. SET clauses come from the parameter names.

_runs = Base.metadata.tables["runs"]
_steps = Base.metadata.tables["step_runs"]
_events = Base.metadata.tables["events"]
_versions = Base.metadata.tables["flow_versions"]
_index = Base.metadata.tables["run_index"]

_INSERT_EVENT = insert(_events)
_INSERT_RUN = insert(_runs)
_EVENT_COLUMNS = ("flow_id", "received_at", "method", "query", "headers", "body", "content_type")
_RUN_COLUMNS = ("flow_id", "flow_version", "status", "dedupe_key", "order_key", "created_at", "updated_at", "deliveries")
_new_event = insert(_events).values({c: bindparam(c, type_=_events.c[c].type) for c in _EVENT_COLUMNS}).returning(
    _events.c.id).cte("new_event")
# PostgreSQL: the event and its run in one statement (a data-modifying CTE), one round trip per webhook
_INSERT_EVENT_AND_RUN = insert(_runs).from_select(
    [*_RUN_COLUMNS, "event_id"],
    select(*[bindparam(f"run_{c}", type_=_runs.c[c].type) for c in _RUN_COLUMNS], _new_event.c.id),
).returning(_runs.c.id)
_INSERT_INDEX = insert(_index)
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
_DUPLICATE_OF = update(_runs).where(
    _runs.c.flow_id == bindparam("b_flow"), _runs.c.dedupe_key == bindparam("b_key"),
).values(deliveries=_runs.c.deliveries + 1).returning(_runs.c.id)
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


def _inserted_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _step_values(run_id: int, r: StepResult) -> dict[str, Any]:
    """Column values of a step result (its error message made printable, as every stored text)."""
    r.error_message = clean_text(r.error_message) if r.error_message else r.error_message
    return {"run_id": run_id, "path": r.path, "position": r.position, "attempt": r.attempt,
            "status": r.status.value, "started_at": r.started_at, "finished_at": r.finished_at, "input": r.input,
            "output": r.output, "request": r.request, "response": r.response, "error_type": r.error_type,
            "error_message": r.error_message, "retry_at": r.retry_at, "idempotency_key": r.idempotency_key,
            "state": r.state}


class LeaseLost(EngineError):
    """Another worker took this run over (our lease expired); stop without writing more."""


@dataclass
class Accepted:
    run_id: int
    duplicate: bool


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


@dataclass
class RunPage:
    runs: list[RunRecord]
    next_cursor: int | None


PING_AFTER_IDLE_S = 1.0
# A PostgreSQL server that stops answering (a partition, a hung host) must not hold a thread for the
# ~15 minutes TCP takes to give up: connecting gives up after CONNECT_TIMEOUT_S, keepalives find a dead
# peer of a quiet connection in about a minute, and unacknowledged data times out after TCP_USER_TIMEOUT_MS.
CONNECT_TIMEOUT_S = 10
TCP_USER_TIMEOUT_MS = 60_000


def _hung_up(dbapi_conn: Any) -> bool:
    """An idle server connection has nothing to say: readable means closed or terminated by the server."""
    poller = poll()
    poller.register(dbapi_conn.fileno(), POLLIN)
    return bool(poller.poll(0))


def _check_on_checkout(engine: Engine) -> None:
    """Pre-ping without its round trip under load (it cost as much as the commit per ingested event).

    A pooled connection is handed out as is when its socket is quiet and it was in use less than
    PING_AFTER_IDLE_S ago; otherwise it is pinged. A restart or a cut shows as a readable socket (the
    server's termination message or EOF) and the pool connects afresh, like pool_pre_ping would.
    """

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _used(_dbapi_conn: Any, record: Any) -> None:
        record.info["hl_used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        stale = time.monotonic() - record.info.get("hl_used_at", 0.0) > PING_AFTER_IDLE_S
        try:
            alive = not _hung_up(dbapi_conn) and (not stale or engine.dialect.do_ping(dbapi_conn))
        except Exception:  # noqa: BLE001 - any failure of the ping means: connect again
            alive = False
        if not alive:
            raise DisconnectionError("the database closed this pooled connection")


BUSY_TIMEOUT_S = 30.0
_BUSY_PAUSE_MAX_S = 0.002


def begin_immediate(dbapi_conn: Any) -> None:
    """Take SQLite's write lock, retrying every 0.1-2 ms (jittered) for up to BUSY_TIMEOUT_S.

    SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms between attempts: under steady writes a
    request that loses a few times sleeps long after the lock is free again (p99 ack of ~900 ms at
    500 webhooks/s, with commits that take 0.3 ms).
    """
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = 0.0001
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
            time.sleep(random.uniform(pause / 2, pause))
            pause = min(pause * 2, _BUSY_PAUSE_MAX_S)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An Engine with WAL and busy timeouts on SQLite and a liveness check elsewhere (a restarted database heals)."""
    is_sqlite = url.startswith("sqlite")
    options: dict[str, Any] = {"json_serializer": _dumps, **kwargs}
    if is_sqlite:
        options.setdefault("connect_args", {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})
    else:
        options.setdefault("pool_use_lifo", True)  # the busiest connections stay warm, spare ones go idle
        options.setdefault("connect_args", {
            "connect_timeout": CONNECT_TIMEOUT_S, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
            "keepalives_count": 3, "tcp_user_timeout": TCP_USER_TIMEOUT_MS})
    engine = create_engine(url, **options)
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new file: pruning shrinks it
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is synced at every commit, so an acknowledged event (I1) and a recorded step (I5)
            # survive a power cut, not only a process crash (NORMAL would roll the last commits back).
            # Only RunStore._conn(durable=False) commits with NORMAL (set at its BEGIN, above).
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Writers take the lock up front: a deferred transaction that upgrades to a write
            # lock fails with SQLITE_BUSY instead of waiting for the busy timeout.
            options = conn.get_execution_options()
            if options.get("hl_write"):
                # the sync level is per connection and can only change between transactions
                level = "FULL" if options.get("hl_durable", True) else "NORMAL"
                info = conn.connection.info
                if info.get("hl_sync") != level:
                    conn.connection.dbapi_connection.execute(f"PRAGMA synchronous={level}")
                    info["hl_sync"] = level
                begin_immediate(conn.connection.dbapi_connection)
            else:
                conn.exec_driver_sql("BEGIN")

    else:
        _check_on_checkout(engine)
    return engine


def _run_record(row: Any) -> RunRecord:
    return RunRecord(
        id=row.id, flow_id=row.flow_id, flow_version=row.flow_version, event_id=row.event_id,
        status=RunStatus(row.status), created_at=row.created_at, updated_at=row.updated_at,
        started_at=row.started_at, finished_at=row.finished_at, next_attempt_at=row.next_attempt_at,
        dedupe_key=row.dedupe_key, order_key=row.order_key, error=row.error, reason=row.reason,
        parent_run_id=row.parent_run_id, replay_kind=row.replay_kind, current_step=row.current_step,
        deliveries=row.deliveries, lease_owner=row.lease_owner, lease_expires_at=row.lease_expires_at,
    )


def _event_record(row: Any, prefix: str = "") -> EventRecord:
    """From an events row, or from columns labelled ``<prefix><name>`` in a join."""
    f = {name: getattr(row, prefix + name) for name in _events.c.keys()}
    return EventRecord(id=f["id"], flow_id=f["flow_id"], received_at=f["received_at"], method=f["method"],
                       query=f["query"], headers=[(k, v) for k, v in f["headers"]], body=bytes(f["body"]),
                       content_type=f["content_type"])


def _step_result(row: Any, with_state: bool = False) -> StepResult:
    """An audit row as a StepResult; ``with_state`` (claims and replays only) adds the resume state."""
    return StepResult(
        path=row.path, status=StepStatus(row.status), attempt=row.attempt, position=row.position,
        input=row.input, output=row.output, request=row.request, response=row.response,
        error_type=row.error_type, error_message=row.error_message, started_at=row.started_at,
        finished_at=row.finished_at, retry_at=row.retry_at, idempotency_key=row.idempotency_key,
        state=row.state if with_state else None,
    )


class RunStore:
    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.dialect = self.engine.dialect.name
        self._writer = self.engine.execution_options(hl_write=True)
        self._lax_writer = self.engine.execution_options(hl_write=True, hl_durable=False)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self._writer, expire_on_commit=False)
        self._known_versions: set[str] = set()

    # --- plumbing ---------------------------------------------------------------------------

    @staticmethod
    @contextmanager
    def _unavailable() -> Iterator[None]:
        """A lost or refused connection becomes StoreUnavailable (callers answer 503 or retry later)."""
        try:
            yield
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, IntegrityError):
                raise
            if exc.connection_invalidated or isinstance(exc, OperationalError):
                raise StoreUnavailable(f"database unavailable: {str(exc.orig).splitlines()[0][:200]}") from exc
            raise

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Session]:
        """An ORM session in one transaction: pages, replay, retention, destinations."""
        maker = self._write if write else self._read
        with self._unavailable(), maker() as session, session.begin():
            yield session

    @contextmanager
    def _conn(self, durable: bool = True) -> Iterator[Connection]:
        """A Core write transaction for the hot path (ingest and execution): prebuilt statements only.

        ``durable=False`` commits without waiting for the disk (SQLite synchronous=NORMAL, PostgreSQL
        synchronous_commit=off): a process crash keeps it, a power cut or a database crash may drop it,
        never a later durable commit. Only for what the next durable commit would make good.
        """
        with self._unavailable(), (self._writer if durable else self._lax_writer).begin() as conn:
            if not durable and self.dialect == "postgresql":
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield conn

    def create_all(self) -> None:
        """Create tables directly (tests); deployments use `hookline db upgrade` (Alembic)."""
        Base.metadata.create_all(self.engine)

    def drop_all(self) -> None:
        Base.metadata.drop_all(self.engine)

    def ping(self) -> None:
        with self._tx(write=False) as s:
            s.execute(select(1))

    def dispose(self) -> None:
        self.engine.dispose()

    # --- flow versions (I10) ---------------------------------------------------------------

    def _ensure_version(self, s: Session, flow_id: str, version: str, source: str, path: str, now: float) -> None:
        if version in self._known_versions:
            return
        if s.get(FlowVersionRow, version) is None:
            s.add(FlowVersionRow(version=version, flow_id=flow_id, path=path, source=source, created_at=now))
            s.flush()
        self._known_versions.add(version)

    def save_flow_version(self, flow_id: str, version: str, source: str, path: str) -> None:
        try:
            with self._tx() as s:
                self._ensure_version(s, flow_id, version, source, path, time.time())
        except IntegrityError:
            self._known_versions.add(version)  # another process saved it first

    def flow_source(self, version: str) -> tuple[str, str, str] | None:
        """(flow_id, source, path) of a stored flow version."""
        with self._tx(write=False) as s:
            row = s.get(FlowVersionRow, version)
            return (row.flow_id, row.source, row.path) if row else None

    # --- ingress (I1, I2) --------------------------------------------------------------------

    def accept(
        self,
        *,
        flow_id: str,
        version: str,
        source: str,
        path: str,
        method: str,
        query: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        content_type: str,
        dedupe_key: str | None,
        order_key: str | None = None,
        index: dict[str, str] | None = None,
        now: float | None = None,
    ) -> Accepted:
        """Store the raw event and a queued run in one transaction, or find the run a duplicate belongs to."""
        now = time.time() if now is None else now
        if version not in self._known_versions:
            self.save_flow_version(flow_id, version, source, path)
        try:
            event_values = {"flow_id": flow_id, "received_at": now, "method": method, "query": query,
                            "headers": [list(h) for h in headers], "body": body, "content_type": content_type}
            run_values = {"flow_id": flow_id, "flow_version": version, "status": RunStatus.QUEUED.value,
                          "dedupe_key": dedupe_key, "order_key": order_key, "created_at": now, "updated_at": now,
                          "deliveries": 1}
            with self._conn() as c:
                if self.dialect == "postgresql":
                    both = {**event_values, **{f"run_{k}": v for k, v in run_values.items()}}
                    run_id = c.execute(_INSERT_EVENT_AND_RUN, both).scalar_one()
                else:
                    event_id = _inserted_id(c.execute(_INSERT_EVENT, event_values))
                    run_id = _inserted_id(c.execute(_INSERT_RUN, {**run_values, "event_id": event_id}))
                if index:
                    c.execute(_INSERT_INDEX, [{"run_id": run_id, "name": n, "value": v} for n, v in index.items()])
                return Accepted(run_id, False)
        except IntegrityError:
            if dedupe_key is None:
                raise
        with self._conn() as c:
            first = c.execute(_DUPLICATE_OF, {"b_flow": flow_id, "b_key": dedupe_key}).scalar_one()
            return Accepted(first, True)

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

    # --- retention ---------------------------------------------------------------------------------

    def prune(self, *, succeeded_before: float, failed_before: float, batch: int = 500) -> Iterator[int]:
        """Delete terminal runs older than the cut-offs in short transactions; yields how many each batch took.

        Events go with their last run. Short batches keep ingress and workers flowing meanwhile.
        """
        done = [RunStatus.SUCCEEDED.value, RunStatus.FILTERED.value]
        while True:
            with self._tx() as s:
                ids = list(s.execute(
                    select(RunRow.id).where(or_(
                        and_(RunRow.status.in_(done), RunRow.finished_at < succeeded_before),
                        and_(RunRow.status == RunStatus.FAILED.value, RunRow.finished_at < failed_before),
                    )).order_by(RunRow.id).limit(batch)
                ).scalars())
                if not ids:
                    break
                events = list(s.execute(select(RunRow.event_id).where(RunRow.id.in_(ids)).distinct()).scalars())
                s.execute(delete(StepRunRow).where(StepRunRow.run_id.in_(ids)))
                s.execute(delete(RunIndexRow).where(RunIndexRow.run_id.in_(ids)))
                s.execute(update(RunRow).where(RunRow.parent_run_id.in_(ids)).values(parent_run_id=None))
                s.execute(delete(RunRow).where(RunRow.id.in_(ids)))
                s.execute(delete(EventRow).where(EventRow.id.in_(events),
                                                 ~exists().where(RunRow.event_id == EventRow.id)))
            yield len(ids)
        with self._tx() as s:
            s.execute(delete(SandboxRequestRow).where(SandboxRequestRow.created_at < succeeded_before))

    def reclaim_space(self, full: bool = False) -> None:
        """SQLite: return free pages to the file system (incremental vacuum; ``full`` runs VACUUM once,
        which also converts a database created before auto_vacuum was on)."""
        if self.dialect != "sqlite":
            return
        raw = self.engine.raw_connection()  # outside any transaction (we issue BEGIN ourselves on SQLite)
        try:
            cur = raw.cursor()
            # executescript steps the pragma to the end (execute() would free a single page)
            cur.executescript("VACUUM;" if full else "PRAGMA incremental_vacuum;")
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # free pages leave the file at checkpoint
            cur.close()
        finally:
            raw.close()

    # --- replay (I5: a new, linked run) ------------------------------------------------------

    def create_linked_run(self, parent_id: int, kind: str, version: str, *, keep_steps_before: str | None = None,
                          now: float | None = None) -> int:
        """A new queued run on the same event, linked to its parent.

        With ``keep_steps_before`` (retry from a step), the parent's succeeded results before that
        step are copied so they are not executed again.
        """
        return self.create_linked_runs([(parent_id, version)], kind, keep_steps_before=keep_steps_before, now=now)[0]

    def create_linked_runs(self, parents: Sequence[tuple[int, str]], kind: str, *,
                           keep_steps_before: str | None = None, now: float | None = None) -> list[int]:
        """Linked runs for many (parent id, flow version) pairs, 500 per transaction; KeyError if a parent is gone."""
        now = time.time() if now is None else now
        new_ids: list[int] = []
        for start in range(0, len(parents), 500):
            chunk = parents[start : start + 500]
            with self._tx() as s:
                rows = {r.id: r for r in s.execute(select(RunRow).where(RunRow.id.in_([p for p, _ in chunk])))
                        .scalars()}
                created: list[tuple[int, RunRow]] = []
                for parent_id, version in chunk:
                    parent = rows.get(parent_id)
                    if parent is None:
                        raise KeyError(parent_id)
                    run = RunRow(flow_id=parent.flow_id, flow_version=version, event_id=parent.event_id,
                                 status=RunStatus.QUEUED.value, dedupe_key=None, order_key=parent.order_key,
                                 created_at=now, updated_at=now, parent_run_id=parent.id, replay_kind=kind)
                    s.add(run)
                    created.append((parent_id, run))
                s.flush()
                by_parent = {parent_id: run.id for parent_id, run in created}
                for idx in s.execute(select(RunIndexRow).where(RunIndexRow.run_id.in_(list(by_parent)))).scalars():
                    s.add(RunIndexRow(run_id=by_parent[idx.run_id], name=idx.name, value=idx.value))
                if keep_steps_before is not None:
                    for parent_id, run in created:
                        steps = s.execute(select(StepRunRow).where(StepRunRow.run_id == parent_id)
                                          .order_by(StepRunRow.id)).scalars()
                        for row in steps:
                            if row.path == keep_steps_before:
                                break
                            if row.status in (StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value):
                                s.add(StepRunRow(**_step_values(run.id, _step_result(row, True))))
                new_ids.extend(run.id for _, run in created)
        return new_ids

    # --- reading -------------------------------------------------------------------------------

    def get_run(self, run_id: int) -> RunDetail | None:
        with self._tx(write=False) as s:
            row = s.get(RunRow, run_id)
            if row is None:
                return None
            ev = s.get(EventRow, row.event_id)
            assert ev is not None
            steps = s.execute(select(StepRunRow).where(StepRunRow.run_id == run_id).order_by(StepRunRow.id))
            children = s.execute(select(RunRow).where(RunRow.parent_run_id == run_id).order_by(RunRow.id))
            index = s.execute(select(RunIndexRow).where(RunIndexRow.run_id == run_id))
            return RunDetail(
                run=_run_record(row), event=_event_record(ev), steps=[_step_result(r) for r in steps.scalars()],
                children=[_run_record(c) for c in children.scalars()],
                index={i.name: i.value for i in index.scalars()},
            )

    def get_run_record(self, run_id: int) -> RunRecord | None:
        with self._tx(write=False) as s:
            row = s.get(RunRow, run_id)
            return _run_record(row) if row else None

    def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        q: str | None = None,
        cursor: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> RunPage:
        """Newest first, keyset-paginated on id (no OFFSET, no COUNT).

        ``q`` matches a dedupe key exactly, ``name:value`` an indexed field, a number a run id (all index
        lookups); only when none of those matches anything is it searched as text inside the raw event
        bodies, which scans. ``after`` returns runs newer than that id (live refresh).
        """
        limit = max(1, min(limit, 500))
        stmt = select(RunRow)
        if flow:
            stmt = stmt.where(RunRow.flow_id == flow)
        if status:
            statuses = [status] if isinstance(status, str) else list(status)
            stmt = stmt.where(RunRow.status.in_(statuses))
        if since is not None:
            stmt = stmt.where(RunRow.created_at >= since)
        if until is not None:
            stmt = stmt.where(RunRow.created_at < until)
        with self._tx(write=False) as s:
            if q:
                exact = self._exact(q)
                if re.match(r"^[A-Za-z_][\w-]*:\S", q.strip()):  # a search field, order_id:123: index only
                    name, value = (part.strip() for part in q.split(":", 1))
                    # ids first, then runs by primary key: a planner scanning runs newest-first while
                    # probing the subquery would read the whole table when nothing matches
                    ids = s.execute(select(RunIndexRow.run_id).where(RunIndexRow.name == name,
                                                                     RunIndexRow.value == value)
                                    .order_by(RunIndexRow.run_id.desc()).limit(10_000)).scalars().all()
                    stmt = stmt.where(RunRow.id.in_(list(ids)))
                elif s.execute(stmt.with_only_columns(RunRow.id).where(exact).limit(1)).first():
                    stmt = stmt.where(exact)
                else:
                    stmt = stmt.where(self._body_contains(q))
            if cursor is not None:
                stmt = stmt.where(RunRow.id < cursor)
            if after is not None:
                stmt = stmt.where(RunRow.id > after)
            rows = s.execute(stmt.order_by(RunRow.id.desc()).limit(limit + 1)).scalars().all()
        runs = [_run_record(r) for r in rows[:limit]]
        return RunPage(runs, runs[-1].id if len(rows) > limit else None)

    @staticmethod
    def _exact(q: str) -> Any:
        """Index lookups: dedupe key, run id, ``name:value`` search field."""
        q = q.strip()
        conditions = [RunRow.dedupe_key == q]
        if q.isdigit() and len(q) < 19:
            conditions.append(RunRow.id == int(q))
        if ":" in q:
            name, value = q.split(":", 1)
            conditions.append(RunRow.id.in_(select(RunIndexRow.run_id).where(
                RunIndexRow.name == name.strip(), RunIndexRow.value == value.strip())))
        return or_(*conditions)

    def _body_contains(self, q: str) -> Any:
        needle = q.strip().encode()
        if self.dialect == "postgresql":  # position(bytea IN bytea): works on non-UTF-8 bodies too
            body_match = func.position(literal(needle, LargeBinary).op("IN")(EventRow.body)) > 0
        else:
            body_match = func.instr(EventRow.body, needle) > 0
        return exists().where(EventRow.id == RunRow.event_id, body_match)

    def ids_matching(self, *, flow: str | None, status: str | None, since: float | None, until: float | None,
                     q: str | None = None, limit: int = 10_000) -> list[int]:
        """Run ids for a bulk action, oldest first."""
        ids: list[int] = []
        cursor = None
        while len(ids) < limit:
            page = self.list_runs(flow=flow, status=status, since=since, until=until, q=q, cursor=cursor, limit=500)
            ids.extend(r.id for r in page.runs)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return sorted(ids[:limit])

    def unfinished_counts(self) -> dict[str, int]:
        """Queued, running and waiting runs (uses the status index; terminal rows are not counted)."""
        unfinished = [RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.WAITING.value]
        with self._tx(write=False) as s:
            rows = s.execute(select(RunRow.status, func.count()).where(RunRow.status.in_(unfinished))
                             .group_by(RunRow.status)).all()
        return {status: 0 for status in unfinished} | {status: count for status, count in rows}

    def flow_stats(self, flow_ids: Sequence[str], since: float, bucket_s: float) -> dict[str, dict[str, Any]]:
        """Per flow: run counts by status and per ``bucket_s`` since ``since`` (``volume``), and its last failure.

        Every flow in ``flow_ids`` gets an entry; the last failure may be older than ``since``. One query
        serves the flows page and a single flow's page. Naming the flows (``flow_id IN``) lets SQLite read
        only the window, on ix_runs_flow_created: with ``created_at >= since`` alone its planner scans all of
        ix_runs_flow_status_id because that matches the GROUP BY (0.7-3 s at 1,000,000 runs). PostgreSQL
        reads the window on either index.
        """
        buckets = max(1, int((time.time() - since) // bucket_s) + 1)
        out: dict[str, dict[str, Any]] = {f: {"counts": {}, "volume": [0] * buckets, "last_failure": None}
                                          for f in flow_ids}
        bucket = func.floor((RunRow.created_at - since) / bucket_s).label("bucket")
        with self._tx(write=False) as s:
            rows = s.execute(
                select(RunRow.flow_id, RunRow.status, bucket, func.count())
                .where(RunRow.flow_id.in_(list(out)), RunRow.created_at >= since)
                # the bucket by name: PostgreSQL sees the expression's two binds as a different expression
                .group_by(RunRow.flow_id, RunRow.status, literal_column("bucket"))
            ).all()
            for flow_id, status, b, count in rows:
                counts, volume = out[flow_id]["counts"], out[flow_id]["volume"]
                counts[status] = counts.get(status, 0) + count
                if b is not None and 0 <= int(b) < buckets:
                    volume[int(b)] += count
            for flow_id in out:
                last = s.execute(
                    select(RunRow).where(RunRow.flow_id == flow_id, RunRow.status == RunStatus.FAILED.value)
                    .order_by(RunRow.id.desc()).limit(1)
                ).scalar()
                out[flow_id]["last_failure"] = _run_record(last) if last else None
        return out

    # --- destination protection (engine.destinations) -------------------------------------------

    def _destination(self, s: Session, host: str, now: float) -> tuple[DestinationRow, int]:
        row = s.execute(select(DestinationRow).where(DestinationRow.host == host).with_for_update()).scalar()
        if row is None:
            try:
                with s.begin_nested():
                    s.add(DestinationRow(host=host, state="closed", failures=0, open_until=0.0, tokens=0.0,
                                         tokens_at=0.0, updated_at=now))
            except IntegrityError:
                pass  # another worker created it first
            row = s.execute(select(DestinationRow).where(DestinationRow.host == host).with_for_update()).scalar_one()
        s.execute(delete(DestinationSlotRow).where(DestinationSlotRow.host == host,
                                                   DestinationSlotRow.expires_at < now))
        in_flight = s.execute(select(func.count()).select_from(DestinationSlotRow)
                              .where(DestinationSlotRow.host == host)).scalar_one()
        return row, in_flight

    @staticmethod
    def _as_destination(row: DestinationRow, in_flight: int) -> Destination:
        return Destination(row.host, row.state, row.failures, row.open_until, row.tokens, row.tokens_at, in_flight)

    @staticmethod
    def _store_destination(row: DestinationRow, dest: Destination, now: float) -> None:
        row.state, row.failures, row.open_until = dest.state, dest.failures, dest.open_until
        row.tokens, row.tokens_at, row.updated_at = dest.tokens, dest.tokens_at, now

    def destination_admit(self, host: str, limits: Limits, holder: str, hold_s: float,
                          now: float | None = None) -> Verdict:
        """Atomically decide and, when allowed, take a token and an in-flight slot for ``holder``."""
        now = time.time() if now is None else now
        with self._tx() as s:
            row, in_flight = self._destination(s, host, now)
            s.execute(delete(DestinationSlotRow).where(DestinationSlotRow.host == host,
                                                       DestinationSlotRow.holder == holder))
            verdict, dest = admit(self._as_destination(row, in_flight), limits, now)
            if verdict.allowed:
                self._store_destination(row, dest, now)
                s.add(DestinationSlotRow(host=host, holder=holder, expires_at=now + hold_s))
            return verdict

    def destination_settle(self, host: str, limits: Limits, holder: str, failed: bool,
                           now: float | None = None) -> Destination:
        now = time.time() if now is None else now
        with self._tx() as s:
            s.execute(delete(DestinationSlotRow).where(DestinationSlotRow.host == host,
                                                       DestinationSlotRow.holder == holder))
            row, in_flight = self._destination(s, host, now)
            dest = settle(self._as_destination(row, in_flight + 1), limits, failed=failed, now=now)
            self._store_destination(row, dest, now)
            return dest

    def destination(self, host: str) -> Destination | None:
        with self._tx(write=False) as s:
            row = s.get(DestinationRow, host)
            return self._as_destination(row, 0) if row else None

    def destinations(self) -> list[Destination]:
        now = time.time()
        with self._tx(write=False) as s:
            counts = dict(s.execute(select(DestinationSlotRow.host, func.count()).where(
                DestinationSlotRow.expires_at >= now).group_by(DestinationSlotRow.host)).all())
            return [self._as_destination(r, counts.get(r.host, 0))
                    for r in s.execute(select(DestinationRow).order_by(DestinationRow.host)).scalars()]

    # --- sandbox receiver --------------------------------------------------------------------------

    def sandbox_record(self, name: str, method: str, path: str, headers: list[tuple[str, str]], body: str,
                       response_id: str) -> int:
        with self._tx() as s:
            row = SandboxRequestRow(name=name, method=method, path=path, headers=[list(h) for h in headers],
                                    body=body, response_id=response_id, created_at=time.time())
            s.add(row)
            s.flush()
            return row.id

    def sandbox_list(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        stmt = select(SandboxRequestRow).order_by(SandboxRequestRow.id.desc()).limit(limit)
        if name:
            stmt = stmt.where(SandboxRequestRow.name == name)
        with self._tx(write=False) as s:
            return [
                {"id": r.id, "name": r.name, "method": r.method, "path": r.path, "headers": r.headers,
                 "body": r.body, "response_id": r.response_id, "created_at": r.created_at}
                for r in s.execute(stmt).scalars()
            ]

    # --- reading for the UI (appended for the operator pages) ---------------------------------------

    def runs_by_ids(self, ids: Sequence[int]) -> list[RunRecord]:
        """The given runs that exist, newest first: the UI refreshes the status of rows it already shows."""
        if not ids:
            return []
        with self._tx(write=False) as s:
            rows = s.execute(select(RunRow).where(RunRow.id.in_(list(ids))).order_by(RunRow.id.desc())).scalars()
            return [_run_record(r) for r in rows]


from engine import connection_store as _connection_store  # noqa: E402,F401  its table is part of the schema
