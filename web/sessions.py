"""Server-side login sessions: the signed cookie carries a random id that must still be live in the database.

Flask's cookie session alone cannot be revoked: a cookie saved before ``POST /logout`` kept reading
``/runs.json``. So a login creates a row here, every request with a login checks it, logout deletes it, and
a session unused for ``HOOKLINE_SESSION_IDLE_S`` is ended. Only the id's SHA-256 is stored, so reading the
table gives nobody a usable cookie. All web processes share the run store's database, hence the table lives
there; it is created on first use (it holds nothing a migration has to carry over: losing it logs people out).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable

from sqlalchemy import Column, Float, MetaData, String, Table, delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

metadata = MetaData()
ui_sessions = Table(
    "ui_sessions", metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionRegistry:
    """Live login sessions in the shared database; ``last_seen`` is written at most every ``touch_s`` seconds."""

    def __init__(self, engine: Engine, idle_s: float, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.idle_s = idle_s
        self.touch_s = min(60.0, idle_s / 10)
        self.clock = clock
        self._ready = False
        self._lock = threading.Lock()

    def _table(self) -> Table:
        if not self._ready:
            with self._lock:
                if not self._ready:
                    try:
                        metadata.create_all(self.engine, checkfirst=True)
                    except (OperationalError, ProgrammingError):  # another process created it at the same moment
                        metadata.create_all(self.engine, checkfirst=True)
                    self._ready = True
        return ui_sessions

    def start(self) -> str:
        """A new session's cookie value; sessions idle past their limit are swept out at the same time."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        table = self._table()
        with self.engine.begin() as conn:
            conn.execute(delete(table).where(table.c.last_seen < now - self.idle_s))
            conn.execute(insert(table).values(id_hash=_hash(token), created_at=now, last_seen=now))
        return token

    def alive(self, token: str) -> bool:
        """True while the session exists and was used within the idle limit (this use counts as one)."""
        table = self._table()
        now = self.clock()
        key = _hash(token)
        with self.engine.connect() as conn:
            last_seen = conn.execute(select(table.c.last_seen).where(table.c.id_hash == key)).scalar()
        if last_seen is None:
            return False
        if last_seen < now - self.idle_s:
            self.end(token)
            return False
        if now - last_seen >= self.touch_s:
            with self.engine.begin() as conn:
                conn.execute(update(table).where(table.c.id_hash == key).values(last_seen=now))
        return True

    def end(self, token: str) -> None:
        table = self._table()
        with self.engine.begin() as conn:
            conn.execute(delete(table).where(table.c.id_hash == _hash(token)))
