"""The only Huey instance, and tasks that are three-line calls into the service.

``huey_consumer engine.tasks.huey`` works, but ``hookline worker`` also starts the reaper thread.
Settings come from the environment once per process; the service is built on first use.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from huey import Huey, RedisHuey, crontab
from huey.storage import SqliteStorage

from engine.config import Settings

if TYPE_CHECKING:
    from engine.service import Service

log = logging.getLogger("hookline.tasks")


class QueueStorage(SqliteStorage):  # type: ignore[misc]
    """Huey's SQLite storage in WAL with synchronous=NORMAL: no fsync per message (the run store syncs each commit).

    A message is not the record, the committed run is: a process crash loses nothing in WAL mode, and a
    message a power cut takes is re-sent by the reaper. Huey's default (synchronous=FULL) fsyncs every
    enqueue under an exclusive lock (0.8 ms here), which serialised ingest across web processes.
    """

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn


def make_huey(settings: Settings) -> Huey:
    if settings.redis_url:
        return RedisHuey("hookline", url=settings.redis_url, results=False)
    return Huey("hookline", storage_class=QueueStorage, filename=settings.queue_path, results=False, timeout=30)


settings = Settings.from_env()
huey = make_huey(settings)
_service: Service | None = None
_lock = threading.Lock()


def service() -> Service:
    """The process's Service, built on first use (not at import)."""
    global _service
    from engine.service import Service
    with _lock:
        if _service is None:
            from engine.catalog import FlowCatalog
            from engine.store import RunStore

            _service = Service(settings, RunStore(settings.database_url), FlowCatalog(settings.flows_dir),
                               enqueue=enqueue, pending=huey.pending_count)
        return _service


@huey.task(retries=0)  # type: ignore[untyped-decorator]
def execute_run(run_id: int) -> None:
    service().execute_run(run_id)


@huey.periodic_task(crontab(minute="*"))  # type: ignore[untyped-decorator]
def reap() -> None:
    service().reap()


@huey.periodic_task(crontab(minute="17"))  # type: ignore[untyped-decorator]
def prune() -> None:
    service().prune()


def enqueue(run_id: int, delay: float = 0.0) -> None:
    if delay > 0:
        execute_run.schedule((run_id,), delay=delay)
    else:
        execute_run(run_id)
