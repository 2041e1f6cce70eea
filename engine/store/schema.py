"""The tables and their mapping to engine.model: the one place a column is declared.

Alembic migrations (engine/migrations) must build exactly this schema; tests/test_migrations.py compares
them. Rows never leave the store: the converters below turn them into engine.model dataclasses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine.model import EventRecord, RunRecord, RunStatus, StepResult, StepStatus
from engine.templating import clean_text

BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite only autoincrements INTEGER PRIMARY KEY


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
    # resume state (StepResult.state): deferred, so no ORM read loads it; claims read it (Core) and
    # retry copies undefer it, pages and the API never see it
    state: Mapped[Any] = mapped_column(JSON, nullable=True, deferred=True)

    __table_args__ = (
        UniqueConstraint("run_id", "path", "attempt", name="uq_step_runs_attempt"),
        CheckConstraint("status IN ('running','succeeded','failed','skipped','filtered')", name="ck_step_runs_status"),
    )


class RunIndexRow(Base):
    """Values of ``trigger.index`` fields, so runs of one order are found among millions.

    ``value`` is ``""`` for a field that resolved to nothing (a marker: never a searched value), so the flow
    page counts such runs on this index. Its ``run_id`` column orders matches newest first.
    """

    __tablename__ = "run_index"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(500))
    __table_args__ = (Index("ix_run_index_name_value", "name", "value", "run_id"),)


class BulkJobRow(Base):
    """A bulk replay or retry: what it will create and how far it got, so any web process can show its
    progress and carry it on (engine.store.replay)."""

    __tablename__ = "bulk_jobs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # replay | retry
    version: Mapped[str] = mapped_column(String(16))  # original | current
    parents: Mapped[list[Any]] = mapped_column(JSON)  # [[parent run id, flow version], ...] in order
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    run_ids: Mapped[list[Any]] = mapped_column(JSON)  # the runs created so far, in parents' order
    skipped: Mapped[dict[str, Any]] = mapped_column(JSON)  # reason -> how many of the filter's runs
    query: Mapped[dict[str, Any]] = mapped_column(JSON)  # the filter, for the links back
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


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
    """Shared protection state of one outbound origin, scheme://host:port (engine.destinations).

    The column is still called ``host`` (0002): rows from before origins hold a bare host, which no
    call looks up any more, and ``destinations()`` lists only origins, so they need no migration.
    """

    __tablename__ = "destinations"
    origin: Mapped[str] = mapped_column("host", String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="closed")
    failures: Mapped[int] = mapped_column(Integer, default=0)
    open_until: Mapped[float] = mapped_column(Float, default=0.0)
    tokens: Mapped[float] = mapped_column(Float, default=0.0)
    tokens_at: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[float] = mapped_column(Float, default=0.0)


class DestinationSlotRow(Base):
    """A request in flight to an origin (concurrency limits); expires so a dead worker's slot frees itself."""

    __tablename__ = "destination_slots"
    origin: Mapped[str] = mapped_column("host", String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float)


class AlertRunRow(Base):
    """A run that failed for good and whether it was alerted: decided once, whichever worker closes it (engine.alerts)."""

    __tablename__ = "alert_runs"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True, autoincrement=False)
    flow_id: Mapped[str] = mapped_column(String(100))
    decided_at: Mapped[float] = mapped_column(Float)
    sent: Mapped[bool] = mapped_column(Boolean)


class AlertFlowRow(Base):
    """A flow's alert rate limit, shared by every worker: its last alert and the failures not alerted since."""

    __tablename__ = "alert_flows"
    flow_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_sent_at: Mapped[float | None] = mapped_column(Float)
    suppressed: Mapped[int] = mapped_column(Integer, default=0)


# Core tables of the hot path's prebuilt statements (ingest, execution)
_runs = Base.metadata.tables["runs"]
_steps = Base.metadata.tables["step_runs"]
_events = Base.metadata.tables["events"]
_versions = Base.metadata.tables["flow_versions"]
_index = Base.metadata.tables["run_index"]


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
