"""The only Huey instance, and tasks that are three-line calls into the service.

Nothing is built at import: engine.app.runtime.build_runtime(settings) makes the Huey from those settings,
registers the tasks on it and binds the service they call (``bind``), once per process. ``huey`` is
that instance; read before any bind (``huey_consumer engine.app.tasks.huey``), it builds the runtime
from the environment. ``hookline worker`` also starts the reaper thread.

Outages (engine.app.worker_health): while the store is unavailable the worker takes no message (a breaker
that probes, then resumes) and a run cut off mid-way goes back on the queue; queue read errors are one
line per outage, not a traceback per poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from huey import Huey, crontab
from huey.storage import RedisStorage, SqliteStorage

from engine.app.worker_health import QUEUE_UP, OutageLog, StoreBreaker, queue_errors
from engine.config import Settings
from engine.errors import StoreUnavailable

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


class HooklineHuey(Huey):  # type: ignore[misc]
    """Huey whose consumer takes messages only while the store breaker lets it, and says once that the queue is down.

    Huey's consumer logs a traceback for every failed poll; here a read error is recorded on the queue's
    outage log and the poll comes back empty, so the consumer's own back-off applies.
    """

    def dequeue(self) -> Any:
        if not store_breaker.allow():
            return None  # the messages stay in the queue until the store answers again
        try:
            task = super().dequeue()
        except queue_errors() as exc:
            queue_outage.failed(exc, "retrying quietly")
            return None
        queue_outage.ok()
        return task

    def read_schedule(self, timestamp: Any = None) -> Any:
        try:
            tasks = super().read_schedule(timestamp)
        except queue_errors() as exc:
            queue_outage.failed(exc, "retrying quietly")
            return []
        queue_outage.ok()
        return tasks

    def is_revoked(self, task: Any, timestamp: Any = None, peek: bool = True) -> bool:
        """Huey reads revocations from the queue before running a task it already took: during an outage the
        task still runs (it needs only the database) instead of failing with a traceback."""
        try:
            return bool(super().is_revoked(task, timestamp, peek))
        except queue_errors() as exc:
            queue_outage.failed(exc, "retrying quietly")
            return False

    def delete(self, key: str, *args: Any, **kwargs: Any) -> Any:
        """After a task, Huey clears its revocation key: during an outage that key is simply left to expire."""
        try:
            return super().delete(key, *args, **kwargs)
        except queue_errors() as exc:
            queue_outage.failed(exc, "retrying quietly")
            return None


def make_huey(settings: Settings) -> Huey:
    if settings.redis_url:
        return HooklineHuey("hookline", storage_class=RedisStorage, url=settings.redis_url, results=False)
    return HooklineHuey("hookline", storage_class=QueueStorage, filename=settings.queue_path, results=False,
                        timeout=30)


_huey: Huey | None = None
_execute_run: Any = None
_service: Service | None = None
_lock = threading.Lock()
store_breaker = StoreBreaker(lambda: service().store.ping())
queue_outage = OutageLog("queue", QUEUE_UP)


def bind(huey: Huey, service: Service) -> Huey:
    """Register the tasks on ``huey`` (from make_huey) and make it and ``service`` this process's; build_runtime calls it.

    Task names stay ``engine.tasks.execute_run``, ``reap`` and ``prune`` (huey names a task by its
    function's module) as before this module moved to engine/app, so messages queued by an older
    process, or for one during a rolling upgrade, are understood on both sides.
    """
    global _huey, _execute_run, _service

    @huey.task(retries=0)  # type: ignore[untyped-decorator]
    @_named
    def execute_run(run_id: int) -> None:
        try:
            service.execute_run(run_id)
        except StoreUnavailable as exc:  # cut off mid-run: back on the queue, taken again once the store answers
            store_breaker.opened(exc)
            try:
                enqueue(run_id)
            except queue_errors() as qexc:  # the reaper finds it (queued or lease expired) once both are back
                queue_outage.failed(qexc, "retrying quietly")

    @huey.periodic_task(crontab(minute="*"))  # type: ignore[untyped-decorator]
    @_named
    def reap() -> None:
        _guarded(service.reap)

    @huey.periodic_task(crontab(minute="17"))  # type: ignore[untyped-decorator]
    @_named
    def prune() -> None:
        _guarded(service.prune)

    with _lock:
        _huey, _execute_run, _service = huey, execute_run, service
    return huey


TASK_MODULE = "engine.tasks"
"""The module part of every task's name: where the tasks were defined before engine/app (see ``bind``)."""


def _named(func: Callable[..., None]) -> Callable[..., None]:
    func.__module__ = TASK_MODULE
    return func


def _guarded(job: Any) -> None:
    if store_breaker.allow():
        try:
            job()
        except StoreUnavailable as exc:
            store_breaker.opened(exc)


def _bound() -> tuple[Huey, Any, Service]:
    """What bind installed; without a bind (``huey_consumer engine.app.tasks.huey``) the runtime from the environment."""
    if _huey is None:
        from engine.app.runtime import build_runtime

        build_runtime(Settings.from_env())
    assert _huey is not None and _service is not None
    return _huey, _execute_run, _service


def service() -> Service:
    """The process's Service (bound by build_runtime)."""
    return _bound()[2]


def __getattr__(name: str) -> Any:
    if name == "huey":  # `huey_consumer engine.app.tasks.huey`, `tasks.huey.create_consumer(...)`
        return _bound()[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def enqueue(run_id: int, delay: float = 0.0) -> None:
    execute_run = _bound()[1]
    if delay > 0:
        execute_run.schedule((run_id,), delay=delay)
    else:
        execute_run(run_id)
