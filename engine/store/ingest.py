"""Ingest (I1, I2): the raw event and its queued run in one commit, duplicates folded; flow versions (I10)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.errors import StoreError
from engine.model import RunStatus
from engine.store.connect import StoreBase
from engine.store.schema import FlowVersionRow, _events, _index, _inserted_id, _runs

# --- the hot path's statements, built once --------------------------------------------------------
# A worker runs these several times per run and ingress once per event. Built per call as ORM
# statements they cost ~4x the database work (statement construction, cache keys, unit of work);
# built once, SQLAlchemy's compiled cache serves them. SET clauses come from the parameter names.

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
_DUPLICATE_OF = update(_runs).where(
    _runs.c.flow_id == bindparam("b_flow"), _runs.c.dedupe_key == bindparam("b_key"),
).values(deliveries=_runs.c.deliveries + 1).returning(_runs.c.id)


@dataclass
class Accepted:
    run_id: int
    duplicate: bool



class IngestStore(StoreBase):
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
        except IntegrityError as exc:
            if dedupe_key is None:  # nothing else is unique on a new event: a database fault, never a 2xx (I1)
                raise StoreError(f"database error: {str(exc.orig).splitlines()[0][:200]}") from exc
        with self._conn() as c:
            first = c.execute(_DUPLICATE_OF, {"b_flow": flow_id, "b_key": dedupe_key}).scalar_one()
            return Accepted(first, True)
