"""StoreTokenCache: the connections' OAuth2 tokens in the run store, shared by every worker and machine.

One row per connection (table ``connection_tokens``). A worker refreshes a token only while it holds
the row's lease, granted by one conditional UPDATE (``lease_until < now``), so across processes and
machines one refresh runs at a time per connection; a worker that dies mid-refresh loses the lease
when it expires. The HTTP request is made outside any transaction: no database lock is held while
the token endpoint thinks.

Access and refresh tokens are stored encrypted (Fernet: AES-128-CBC plus HMAC-SHA256, with a random
IV) under the connection's key (engine.connections.runtime.derive_key), so no token appears in the
database in any encoding. A value that does not decrypt (the key changed) reads as absent.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Boolean, Float, Integer, String, Text, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Mapped, mapped_column

from engine.connections import ConnectionFailed
from engine.connections.runtime import CachedToken
from engine.store import Base, RunStore


class ConnectionTokenRow(Base):
    """The shared token state of one connection (values encrypted)."""

    __tablename__ = "connection_tokens"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    access_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    refresh_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    seed: Mapped[str | None] = mapped_column(String(64), nullable=True)
    refresh_at: Mapped[float] = mapped_column(Float, default=0.0)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)
    refreshed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_retryable: Mapped[bool] = mapped_column(Boolean, default=False)
    error_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float, default=0.0)


_table = Base.metadata.tables["connection_tokens"]
_c = _table.c
_NO_LEASE = {"lease_owner": None, "lease_until": 0.0}


def _fernet(key: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(key[:32]))


def _seal(key: bytes, value: str | None) -> str | None:
    return None if value is None else _fernet(key).encrypt(value.encode()).decode("ascii")


def _open(key: bytes | None, value: str | None) -> str | None:
    if key is None or value is None:
        return None
    try:
        return _fernet(key).decrypt(value.encode("ascii")).decode()
    except (InvalidToken, ValueError):
        return None


def _cached(row: Any, key: bytes | None) -> CachedToken:
    return CachedToken(
        access_token=_open(key, row.access_token), refresh_at=row.refresh_at, expires_at=row.expires_at,
        refresh_token=_open(key, row.refresh_token), seed=row.seed, fingerprint=row.fingerprint,
        lease_owner=row.lease_owner, lease_until=row.lease_until, error=row.error,
        error_retryable=bool(row.error_retryable), error_at=row.error_at, refreshed_at=row.refreshed_at,
    )


class StoreTokenCache:
    """engine.connections.runtime.TokenCache on the run store's database (SQLite or PostgreSQL)."""

    def __init__(self, store: RunStore) -> None:
        self.engine = store.engine
        self.dialect = store.dialect
        self._writer = store.engine.execution_options(hl_write=True)  # SQLite: BEGIN IMMEDIATE (engine.store)

    @contextmanager
    def _tx(self, name: str, write: bool = True) -> Iterator[Connection]:
        """One transaction; a database failure is a retryable step error (the run is retried, not failed)."""
        try:
            with (self._writer if write else self.engine).begin() as conn:
                yield conn
        except (DBAPIError, PoolTimeout) as exc:
            orig = getattr(exc, "orig", None)
            first = str(orig).splitlines()[0][:200] if orig is not None else type(exc).__name__
            raise ConnectionFailed(f"connection {name}: token cache unavailable: {first}", retryable=True) from None

    def get(self, name: str, key: bytes) -> CachedToken | None:
        with self._tx(name, write=False) as c:
            row = c.execute(select(_table).where(_c.name == name)).first()
        return _cached(row, key) if row is not None else None

    def lease(self, name: str, key: bytes, owner: str, now: float, until: float) -> CachedToken | None:
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        with self._tx(name) as c:
            c.execute(insert(_table).values(name=name, fingerprint="", refresh_at=0.0, generation=0, lease_until=0.0,
                                            error_retryable=False, updated_at=now).on_conflict_do_nothing())
            # PostgreSQL: a second worker's UPDATE waits for the first one's commit, then re-checks the
            # condition against the new row and matches nothing: one lease holder
            taken = c.execute(update(_table).where(_c.name == name, _c.lease_until < now)
                              .values(lease_owner=owner, lease_until=until, updated_at=now))
            if taken.rowcount != 1:
                return None
            row = c.execute(select(_table).where(_c.name == name)).one()
        return _cached(row, key)

    def put(self, name: str, key: bytes, owner: str, token: CachedToken, now: float) -> None:
        values = {"access_token": _seal(key, token.access_token), "refresh_token": _seal(key, token.refresh_token),
                  "seed": token.seed, "fingerprint": token.fingerprint, "refresh_at": token.refresh_at,
                  "expires_at": token.expires_at, "generation": _c.generation + 1, "refreshed_at": now,
                  "error": None, "error_at": None, "error_retryable": False, "updated_at": now}
        with self._tx(name) as c:
            done = c.execute(update(_table).where(_c.name == name, _c.lease_owner == owner)
                             .values(**values, **_NO_LEASE))
            if done.rowcount != 1:  # the lease ran out mid-request: keep the newer token, leave the new lease alone
                c.execute(update(_table).where(_c.name == name).values(**values))

    def fail(self, name: str, owner: str, message: str, retryable: bool, now: float) -> None:
        with self._tx(name) as c:
            c.execute(update(_table).where(_c.name == name, _c.lease_owner == owner).values(
                error=message[:1000], error_retryable=retryable, error_at=now, updated_at=now, **_NO_LEASE))

    def release(self, name: str, owner: str) -> None:
        with self._tx(name) as c:
            c.execute(update(_table).where(_c.name == name, _c.lease_owner == owner).values(**_NO_LEASE))

    def statuses(self) -> dict[str, CachedToken]:
        with self._tx("*", write=False) as c:
            rows = c.execute(select(_table).order_by(_c.name)).all()
        return {row.name: _cached(row, None) for row in rows}

