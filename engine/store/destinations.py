"""Destination protection's shared state (engine.destinations): breaker, tokens and in-flight slots per origin."""

from __future__ import annotations

import time

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.destinations import Destination, Limits, Verdict, admit, settle
from engine.store.connect import StoreBase
from engine.store.schema import DestinationRow, DestinationSlotRow


class DestinationStore(StoreBase):
    def _destination(self, s: Session, origin: str, now: float) -> tuple[DestinationRow, int]:
        row = s.execute(select(DestinationRow).where(DestinationRow.origin == origin).with_for_update()).scalar()
        if row is None:
            try:
                with s.begin_nested():
                    s.add(DestinationRow(origin=origin, state="closed", failures=0, open_until=0.0, tokens=0.0,
                                         tokens_at=0.0, updated_at=now))
            except IntegrityError:
                pass  # another worker created it first
            row = s.execute(select(DestinationRow).where(DestinationRow.origin == origin).with_for_update()).scalar_one()
        s.execute(delete(DestinationSlotRow).where(DestinationSlotRow.origin == origin,
                                                   DestinationSlotRow.expires_at < now))
        in_flight = s.execute(select(func.count()).select_from(DestinationSlotRow)
                              .where(DestinationSlotRow.origin == origin)).scalar_one()
        return row, in_flight

    @staticmethod
    def _as_destination(row: DestinationRow, in_flight: int) -> Destination:
        return Destination(row.origin, row.state, row.failures, row.open_until, row.tokens, row.tokens_at, in_flight)

    @staticmethod
    def _store_destination(row: DestinationRow, dest: Destination, now: float) -> None:
        row.state, row.failures, row.open_until = dest.state, dest.failures, dest.open_until
        row.tokens, row.tokens_at, row.updated_at = dest.tokens, dest.tokens_at, now

    def destination_admit(self, origin: str, limits: Limits, holder: str, hold_s: float,
                          now: float | None = None) -> Verdict:
        """Atomically decide and, when allowed, take a token and an in-flight slot for ``holder``."""
        now = time.time() if now is None else now
        with self._tx() as s:
            row, in_flight = self._destination(s, origin, now)
            s.execute(delete(DestinationSlotRow).where(DestinationSlotRow.origin == origin,
                                                       DestinationSlotRow.holder == holder))
            verdict, dest = admit(self._as_destination(row, in_flight), limits, now)
            if verdict.allowed:
                self._store_destination(row, dest, now)
                s.add(DestinationSlotRow(origin=origin, holder=holder, expires_at=now + hold_s))
            return verdict

    def destination_settle(self, origin: str, limits: Limits, holder: str, failed: bool,
                           now: float | None = None) -> Destination:
        now = time.time() if now is None else now
        with self._tx() as s:
            s.execute(delete(DestinationSlotRow).where(DestinationSlotRow.origin == origin,
                                                       DestinationSlotRow.holder == holder))
            row, in_flight = self._destination(s, origin, now)
            dest = settle(self._as_destination(row, in_flight + 1), limits, failed=failed, now=now)
            self._store_destination(row, dest, now)
            return dest

    def destination(self, origin: str) -> Destination | None:
        with self._tx(write=False) as s:
            row = s.get(DestinationRow, origin)
            return self._as_destination(row, 0) if row else None

    def destinations(self) -> list[Destination]:
        """Every origin's state; rows keyed by a bare host (before origins) are left out, never looked up again."""
        now = time.time()
        with self._tx(write=False) as s:
            counts = dict(s.execute(select(DestinationSlotRow.origin, func.count()).where(
                DestinationSlotRow.expires_at >= now).group_by(DestinationSlotRow.origin)).all())
            rows = s.execute(select(DestinationRow).where(DestinationRow.origin.contains("://"))
                             .order_by(DestinationRow.origin)).scalars()
            return [self._as_destination(r, counts.get(r.origin, 0)) for r in rows]
