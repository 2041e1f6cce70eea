"""The reaper thread each worker process runs: hands lost, overdue and stuck runs back to the queue (I4)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from engine.errors import StoreUnavailable

if TYPE_CHECKING:
    from engine.app.worker_health import StoreBreaker
    from engine.service import Service

log = logging.getLogger("hookline.reaper")


class Reaper(threading.Thread):
    """Calls ``service.reap()`` every ``interval`` seconds until stopped.

    With a ``breaker`` it passes the worker's store breaker too: during a database outage there is no
    pass (and no log line) per interval, and the outage it meets opens the breaker for the tasks as well.
    """

    def __init__(self, service: Service, interval: float, breaker: StoreBreaker | None = None) -> None:
        super().__init__(name="hookline-reaper", daemon=True)
        self.service = service
        self.interval = interval
        self.breaker = breaker
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            if self.breaker is None or self.breaker.allow():
                try:
                    self.service.reap()
                except StoreUnavailable as exc:
                    if self.breaker is not None:
                        self.breaker.opened(exc)
                    else:
                        log.warning("reaper: %s", exc)
                except Exception as exc:  # noqa: BLE001 - anything else: say so, try again next interval
                    log.warning("reaper: %s", exc)
            self.stopped.wait(self.interval)
