"""Notice a SQLite database file deleted or replaced under a running process.

Open SQLite connections keep writing to the file they opened even after it is unlinked: the process
acknowledged webhooks into a file no one will ever open again, and ``/readyz`` said "database ok". So
the identity (device, inode) of the file is recorded when the store is built, and the readiness check
and the ingest path compare it with what the path names now: missing or different means unavailable
(503), never 202. A few microseconds (one ``stat``) per webhook.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from engine.errors import StoreUnavailable


class DatabaseFileGone(StoreUnavailable):
    """The SQLite file this process writes to is no longer the one at its path: the store is unavailable (503)."""


@dataclass(frozen=True)
class SqliteGuard:
    path: str
    identity: tuple[int, int] | None  # (st_dev, st_ino) when built; None: the file did not exist yet

    @classmethod
    def for_url(cls, database_url: str) -> SqliteGuard | None:
        """A guard for a SQLite file URL; None for other databases and in-memory SQLite."""
        url = make_url(database_url)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:" \
                or url.database.startswith("file:"):
            return None
        path = os.path.abspath(url.database)
        return cls(path, _identity(path))

    def check(self) -> None:
        """Raise DatabaseFileGone when the file was deleted or replaced since the guard was built."""
        now = _identity(self.path)
        if now is None:
            raise DatabaseFileGone(f"database file {self.path} was deleted while in use")
        if self.identity is not None and now != self.identity:
            raise DatabaseFileGone(f"database file {self.path} was replaced while in use (inode {self.identity[1]} -> {now[1]})")


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
