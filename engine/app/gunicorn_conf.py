"""Gunicorn settings used by `hookline web`: keep multiprocess metrics of dead workers out of /metrics."""

from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # prometheus_client is untyped here
