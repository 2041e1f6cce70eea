"""Issue 16 item 15: a worker rides out a PostgreSQL or Redis outage quietly and visibly.

While the store is cut (a TcpProxy in front of PostgreSQL), the worker takes no message (its breaker is
open), its readiness says so (503) and /metrics shows 0; it logs one warning when the outage starts and one
line with its length when it ends, no traceback. Every acknowledged event still succeeds exactly once.
A Redis kill gives the same two lines for the queue instead of a traceback per poll.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.faults.infra import EventStream, RedisServer, all_runs
from tests.faults.oracles import check_stored, wait_all_terminal
from tests.faults.test_redis_restart import flow
from tests.support import Target, free_port, wait_for

EVENTS = 40
STREAM_S = 6.0
DOWN_AT_S = 1.5
DOWN_FOR_S = 3.0


def _worker(stack: Any) -> str:
    port = free_port()
    stack.start("worker", "worker", "--workers", "2", "--health-port", str(port))
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(base + "/healthz") == 200, timeout=30, what=f"worker health\n{stack.logs()}")
    return base


def _get(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None


def _gauge(base: str, name: str) -> float:
    for line in httpx.get(base + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in the worker's /metrics")


def _quiet(log: str) -> None:
    assert "Traceback" not in log, log[-4000:]
    assert "Unhandled exception in task" not in log and "Error reading from queue" not in log


@pytest.mark.slow
def test_store_outage_pauses_the_worker_once_and_loses_no_message(make_stack: Any, target: Target) -> None:
    stack = make_stack("postgres", {"relay": flow(target.url)}, db_proxy=True)
    stack.start_web(workers=1, threads=4)
    health = _worker(stack)
    assert _get(health + "/readyz") == 200 and _gauge(health, "hookline_worker_store_available") == 1

    stream = EventStream(stack.url, "relay", EVENTS, STREAM_S, retry_until=40, retry_every=0.5).start()
    time.sleep(max(0.0, stream.started + DOWN_AT_S - time.monotonic()))  # the fault schedule
    stack.db_proxy.cut()
    wait_for(lambda: _get(health + "/readyz") == 503, timeout=20, what="the worker noticing the outage")
    assert _gauge(health, "hookline_worker_store_available") == 0
    time.sleep(DOWN_FOR_S)
    stack.db_proxy.restore()
    wait_for(lambda: _get(health + "/readyz") == 200, timeout=20, what="the worker resuming")
    assert _gauge(health, "hookline_worker_store_available") == 1
    stream.join()

    assert check_stored(stack.store, stream) == []
    run_ids = [d.run_id for d in stream.accepted if d.run_id is not None]
    assert len(run_ids) == EVENTS
    statuses = wait_all_terminal(stack.store, run_ids, timeout=60, what=stack.logs())
    assert Counter(statuses.values()) == {"succeeded": EVENTS}
    assert len(all_runs(stack.store, "relay")) == EVENTS
    log = (stack.tmp / "worker.log").read_text(errors="replace")
    assert log.count("database outage began") == 1, log[-4000:]
    assert log.count("database outage ended after") == 1, log[-4000:]
    _quiet(log)


@pytest.mark.slow
def test_redis_outage_is_one_line_not_a_traceback_per_poll(make_stack: Any, target: Target,
                                                           own_redis: RedisServer) -> None:
    stack = make_stack("postgres", {"relay": flow(target.url)})
    stack.start_web(workers=1, threads=4)
    health = _worker(stack)
    stream = EventStream(stack.url, "relay", EVENTS, STREAM_S, retry_until=40, retry_every=0.5).start()
    time.sleep(max(0.0, stream.started + DOWN_AT_S - time.monotonic()))
    own_redis.kill()
    wait_for(lambda: _get(health + "/readyz") == 503, timeout=20, what="the worker noticing the queue outage")
    assert _gauge(health, "hookline_worker_queue_available") == 0
    time.sleep(DOWN_FOR_S)
    own_redis.start()
    wait_for(lambda: _get(health + "/readyz") == 200, timeout=20, what="the worker reading the queue again")
    stream.join()

    run_ids = [d.run_id for d in stream.accepted if d.run_id is not None]
    assert len(run_ids) == EVENTS
    statuses = wait_all_terminal(stack.store, run_ids, timeout=60, what=stack.logs())  # the reaper re-enqueues
    assert Counter(statuses.values()) == {"succeeded": EVENTS}
    log = (stack.tmp / "worker.log").read_text(errors="replace")
    assert log.count("queue outage began") == 1, log[-4000:]
    assert log.count("queue outage ended after") == 1, log[-4000:]
    _quiet(log)
