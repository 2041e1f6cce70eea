"""How a worker rides out store and queue outages: a breaker on the store, one log line per outage edge.

Before, during a 6 s PostgreSQL cut a worker popped every queued task, each failed with StoreUnavailable
(444 tracebacks), and its message was dropped, leaving every run to the reaper; a Redis cut gave a
traceback per poll (177). Now:

- ``StoreBreaker``: the first StoreUnavailable opens it (one warning). While open, worker threads take no
  message (they stay in the queue), the reaper skips its passes, and one thread at a time probes the store
  (``ping``) with a growing interval; the first good probe closes it with one line giving the outage's
  length. A task that hit the outage mid-run puts its run id back on the queue.
- ``OutageLog``: the same two lines for the queue (Huey's dequeue and schedule reads), none per poll.
- Both show in ``/metrics`` (``hookline_worker_store_available``, ``hookline_worker_queue_available``,
  ``hookline_worker_outages_total``) and in the readiness of the process (``HealthServer`` for
  ``hookline worker --health-port``; the web app's ``/readyz`` under ``hookline serve``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, generate_latest

log = logging.getLogger("hookline.worker")

STORE_UP = Gauge("hookline_worker_store_available", "0 while this worker's breaker on the store is open.",
                 multiprocess_mode="liveall")
QUEUE_UP = Gauge("hookline_worker_queue_available", "0 while this worker cannot read the queue.",
                 multiprocess_mode="liveall")
OUTAGES = Counter("hookline_worker_outages_total", "Store or queue outages this worker rode out.", ["component"])
STORE_UP.set(1)
QUEUE_UP.set(1)


class OutageLog:
    """Tracks one component's outage: a warning when it starts, one line with its length when it ends."""

    def __init__(self, component: str, gauge: Gauge, clock: Callable[[], float] = time.monotonic) -> None:
        self.component = component
        self.gauge = gauge
        self.clock = clock
        self.since: float | None = None
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, action: str) -> bool:
        """Record a failure; True (and one warning) only for the one that starts an outage."""
        with self._lock:
            if self.since is not None:
                return False
            self.since = self.clock()
        self.gauge.set(0)
        OUTAGES.labels(self.component).inc()
        log.warning("%s outage began (%s); %s", self.component, str(exc).splitlines()[0][:200] if str(exc) else
                    type(exc).__name__, action)
        return True

    def ok(self) -> None:
        if self.since is None:  # the usual case: no lock, no work
            return
        with self._lock:
            since, self.since = self.since, None
        if since is not None:
            self.gauge.set(1)
            log.warning("%s outage ended after %.1f s; resuming", self.component, self.clock() - since)

    def status(self) -> str:
        since = self.since
        return "ok" if since is None else f"unavailable for {self.clock() - since:.1f} s"


class StoreBreaker(OutageLog):
    """The store's outage log, plus the gate worker threads pass before taking a message."""

    def __init__(self, probe: Callable[[], None], min_probe_s: float = 0.5, max_probe_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("database", STORE_UP, clock)
        self.probe = probe
        self.min_probe_s = min_probe_s
        self.max_probe_s = max_probe_s
        self._next_probe = 0.0
        self._interval = min_probe_s
        self._probing = threading.Lock()

    def opened(self, exc: BaseException) -> None:
        if self.failed(exc, "worker stops taking messages until it answers (they stay queued)"):
            self._interval = self.min_probe_s
            self._next_probe = self.clock() + self._interval

    def allow(self) -> bool:
        """True when a message may be taken: closed, or a probe that just succeeded closed it."""
        if self.since is None:
            return True
        if self.clock() < self._next_probe or not self._probing.acquire(blocking=False):
            return False
        try:
            try:
                self.probe()
            except Exception:  # noqa: BLE001 - any failure: still down, probe later
                self._interval = min(self.max_probe_s, self._interval * 2)
                self._next_probe = self.clock() + self._interval
                return False
            self.ok()
            return True
        finally:
            self._probing.release()


def queue_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the queue cannot be reached (not a bad message): OS-level, SQLite, Redis."""
    import sqlite3

    errors: list[type[BaseException]] = [OSError, sqlite3.OperationalError]
    try:
        from redis import exceptions as redis_errors
    except ImportError:  # no Redis in this process (engine.config.skip_unused_drivers)
        pass
    else:
        errors += [redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError]
    return tuple(errors)


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` of a worker process on its own port (a thread)."""

    def __init__(self, host: str, port: int, checks: Callable[[], dict[str, str]]) -> None:
        def respond(handler: BaseHTTPRequestHandler, status: int, body: bytes, kind: str) -> None:
            handler.send_response(status)
            handler.send_header("Content-Type", kind)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/metrics":
                    respond(self, 200, generate_latest(REGISTRY), "text/plain; version=0.0.4")
                elif self.path in ("/readyz", "/healthz"):
                    found = checks() if self.path == "/readyz" else {}
                    ok = all(v.startswith("ok") for v in found.values())
                    body = json.dumps({"ok": ok, "checks": found}).encode()
                    respond(self, 200 if ok else 503, body, "application/json")
                else:
                    respond(self, 404, b'{"ok": false}', "application/json")

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="hookline-health", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
