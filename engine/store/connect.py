"""Engines and transactions: driver tuning, liveness checks, SQLite's write lock, error wrapping.

Every store part reaches the database through StoreBase's ``_tx`` (ORM session: pages, replay, retention,
destinations) or ``_conn`` (Core, prebuilt statements: ingest and execution), so every transaction gets
the same sync level rules and database errors leave the store as engine.errors exceptions.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from select import POLLIN, poll
from typing import Any

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from engine.errors import StoreError, StoreUnavailable
from engine.store.schema import Base


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))



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



class StoreBase:
    """The engine, the two sessionmakers and the transaction helpers every store part builds on."""

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
        """A lost or refused connection becomes StoreUnavailable (callers answer 503 or retry later), any other
        database error StoreError; IntegrityError passes, for the parts that catch it (dedupe, concurrent inserts)."""
        try:
            yield
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            first = str(exc.orig).splitlines()[0][:200] if str(exc.orig) else type(exc.orig).__name__
            if exc.connection_invalidated or isinstance(exc, OperationalError):
                raise StoreUnavailable(f"database unavailable: {first}") from exc
            raise StoreError(f"database error: {first}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from exc

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
