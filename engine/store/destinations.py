"""Destination protection's shared state (engine.destinations): breaker, tokens and in-flight slots per origin."""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.destinations import Destination, Limits, Verdict, admit, settle
from engine.store.connect import StoreBase
from engine.store.schema import DestinationRow, DestinationSlotRow

KEY_CHARS = 255
"""The key column's width (0002, sized for a bare host): an origin adds its scheme and port to the host."""


def _key(origin: str) -> str:
    """The stored key of an origin: the origin, or for one wider than the column (a long host from event
    data, say) a prefix and a hash of the whole, so it is still protected and still one key per origin."""
    if len(origin) <= KEY_CHARS:
        return origin
    return f"{origin[:KEY_CHARS - 17]}#{hashlib.sha256(origin.encode()).hexdigest()[:16]}"


class DestinationStore(StoreBase):
    def _destination(self, s: Session, origin: str, now: float) -> tuple[DestinationRow, int]:
        key = _key(origin)
        row = s.execute(select(DestinationRow).where(DestinationRow.origin == key).with_for_update()).scalar()
        if row is None:
            try:
                with s.begin_nested():
                    s.add(DestinationRow(origin=key, state="closed", failures=0, open_until=0.0, tokens=0.0,
                                         tokens_at=0.0, updated_at=now))
            except IntegrityError:
                pass  # another worker created it first
            row = s.execute(select(DestinationRow).where(DestinationRow.origin == key).with_for_update()).scalar_one()
        s.execute(delete(DestinationSlotRow).where(DestinationSlotRow.origin == key,
                                                   DestinationSlotRow.expires_at < now))
        in_flight = s.execute(select(func.count()).select_from(DestinationSlotRow)
                              .where(DestinationSlotRow.origin == key)).scalar_one()
        return row, in_flight

    @staticmethod
    def _as_destination(row: DestinationRow, in_flight: int, origin: str | None = None) -> Destination:
        return Destination(origin or row.origin, row.state, row.failures, row.open_until, row.tokens, row.tokens_at, in_flight)

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
            s.execute(delete(DestinationSlotRow).where(DestinationSlotRow.origin == row.origin,
                                                       DestinationSlotRow.holder == holder))
            verdict, dest = admit(self._as_destination(row, in_flight, origin), limits, now)
            if verdict.allowed:
                self._store_destination(row, dest, now)
                s.add(DestinationSlotRow(origin=row.origin, holder=holder, expires_at=now + hold_s))
            return verdict

    def destination_settle(self, origin: str, limits: Limits, holder: str, failed: bool,
                           now: float | None = None) -> Destination:
        now = time.time() if now is None else now
        with self._tx() as s:
            s.execute(delete(DestinationSlotRow).where(DestinationSlotRow.origin == _key(origin),
                                                       DestinationSlotRow.holder == holder))
            row, in_flight = self._destination(s, origin, now)
            dest = settle(self._as_destination(row, in_flight + 1, origin), limits, failed=failed, now=now)
            self._store_destination(row, dest, now)
            return dest

    def destination(self, origin: str) -> Destination | None:
        with self._tx(write=False) as s:
            row = s.get(DestinationRow, _key(origin))
            return self._as_destination(row, 0, origin) if row else None

    def destinations(self) -> list[Destination]:
        """Every origin's state; rows keyed by a bare host (before origins) are left out, never looked up again."""
        now = time.time()
        with self._tx(write=False) as s:
            counts = dict(s.execute(select(DestinationSlotRow.origin, func.count()).where(
                DestinationSlotRow.expires_at >= now).group_by(DestinationSlotRow.origin)).all())
            rows = s.execute(select(DestinationRow).where(DestinationRow.origin.contains("://"))
                             .order_by(DestinationRow.origin)).scalars()
            return [self._as_destination(r, counts.get(r.origin, 0)) for r in rows]
