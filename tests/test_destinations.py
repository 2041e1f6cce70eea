"""Destination protection: the pure rules, then a breaker, a rate limit and a concurrency limit shared by
two real worker processes in front of a target that fails and recovers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.destinations import CLOSED, HALF_OPEN, OPEN, Destination, Limits, admit, parse_rate, settle
from engine.store import RunStore
from tests.support import Stack, Target, make_stack, wait_for


def test_breaker_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    limits = Limits(breaker_failures=3, breaker_cooldown=10)
    dest = Destination("crm")
    for i in range(3):
        verdict, dest = admit(dest, limits, now=100.0 + i)
        assert verdict.allowed
        dest = settle(dest, limits, failed=True, now=100.0 + i)
    assert dest.state == OPEN and dest.open_until == 112.0
    verdict, _ = admit(dest, limits, now=105.0)
    assert not verdict.allowed and verdict.retry_at == 112.0 and "circuit open" in verdict.reason
    verdict, probing = admit(dest, limits, now=112.0)
    assert verdict.allowed and probing.state == HALF_OPEN
    assert not admit(probing, limits, now=112.5)[0].allowed  # one probe at a time
    assert settle(probing, limits, failed=True, now=113.0).state == OPEN
    assert settle(probing, limits, failed=False, now=113.0).state == CLOSED


def test_success_resets_the_failure_count() -> None:
    limits = Limits(breaker_failures=2)
    dest = settle(Destination("x", in_flight=1), limits, failed=True, now=1)
    dest = settle(Destination("x", failures=dest.failures, in_flight=1), limits, failed=False, now=2)
    assert dest.failures == 0 and dest.state == CLOSED


def test_token_bucket_and_concurrency() -> None:
    limits = Limits(rate=2.0, burst=2, concurrency=10)
    dest = Destination("x")
    allowed = 0
    for _ in range(5):
        verdict, new = admit(dest, limits, now=50.0)
        if verdict.allowed:
            allowed += 1
            dest = new
    assert allowed == 2
    verdict, _ = admit(dest, limits, now=50.0)
    assert verdict.retry_at == pytest.approx(50.5)
    assert admit(dest, limits, now=50.5)[0].allowed
    assert not admit(Destination("x", in_flight=1), Limits(concurrency=1), now=1)[0].allowed
    assert parse_rate("600/m") == 10 and parse_rate(3) == 3.0
    with pytest.raises(ValueError):
        parse_rate("fast")


def test_store_admission_is_shared_and_slots_expire(store: RunStore) -> None:
    limits = Limits(concurrency=1)
    assert store.destination_admit("h", limits, "run1:a", hold_s=5, now=100).allowed
    assert not store.destination_admit("h", limits, "run2:a", hold_s=5, now=101).allowed
    assert store.destination_admit("h", limits, "run2:a", hold_s=5, now=106).allowed  # run1's slot expired
    store.destination_settle("h", limits, "run2:a", failed=False, now=107)
    assert store.destination_admit("h", limits, "run3:a", hold_s=5, now=107).allowed


FLOW = """
id: pay
steps:
  - id: call
    http:
      url: {url}/crm
      timeout: 2s
      retry: {{max_attempts: 8, initial: 100ms, max_delay: 200ms}}
      limits: {limits}
"""


@pytest.fixture(params=["sqlite", "postgres"])
def two_workers(request: pytest.FixtureRequest, tmp_path: Path, target: Target) -> Iterator[Stack]:
    flows = {"pay": FLOW.format(url=target.url, limits=request.node.get_closest_marker("limits").args[0])}
    for stack in make_stack(request, tmp_path, flows, {}):
        stack.start_web(workers=1)
        stack.start("worker1", "worker", "--workers", "3")
        stack.start("worker2", "worker", "--workers", "3")
        yield stack


def statuses(store: RunStore, ids: list[int]) -> list[str]:
    return [store.get_run_record(i).status.value for i in ids]  # type: ignore[union-attr]


@pytest.mark.limits("{breaker_failures: 3, breaker_cooldown: 3s}")
def test_breaker_shared_by_two_workers_spares_a_failing_target(two_workers: Stack, target: Target) -> None:
    target.script["/crm"] = [(503, {})] * 1000
    store = two_workers.store
    ids = [two_workers.post({"n": i}).json()["run_id"] for i in range(8)]
    wait_for(lambda: any("circuit open" in (r.reason or "") for r in map(store.get_run_record, ids)),
             timeout=30, what="a run waiting on the open circuit")
    # The window comes from the recorded arrivals, not from wall-clock sleeps (a probe once landed inside a
    # slept window on a busy machine): the circuit opens after the 3rd failure arrived, so nothing may arrive
    # in the 3 s after it but calls already in flight.
    opened_after = sorted(r.at for r in target.requests("/crm"))[2]
    wait_for(lambda: time.time() > opened_after + 3.2, timeout=10, what="the cooldown to pass")
    hits_while_open = sum(1 for r in target.requests("/crm") if r.at < opened_after + 3.0 - 0.05)
    # without the breaker, 8 runs x 8 attempts would have hit the target up to 64 times by now
    assert hits_while_open <= 3 + 6, hits_while_open  # 3 to open it, plus calls already in flight
    waiting = [r for r in map(store.get_run_record, ids) if r.status.value == "waiting"]  # type: ignore[union-attr]
    assert waiting and all(r.next_attempt_at for r in waiting)
    target.script["/crm"] = [(200, {"id": "ok"})]  # the target recovers
    wait_for(lambda: statuses(store, ids) == ["succeeded"] * 8, timeout=40, what="all runs to succeed")
    print(f"target hits: {len(target.requests('/crm'))} for 8 runs (breaker kept failures at {hits_while_open})")


@pytest.mark.limits("{rate: 4/s, burst: 2}")
def test_rate_limit_is_shared_by_two_workers(two_workers: Stack, target: Target) -> None:
    store = two_workers.store
    ids = [two_workers.post({"n": i}).json()["run_id"] for i in range(12)]
    wait_for(lambda: statuses(store, ids) == ["succeeded"] * 12, timeout=40, what="all runs to succeed")
    arrivals = sorted(r.at for r in target.requests("/crm"))
    span = arrivals[-1] - arrivals[0]
    # 12 calls at 4/s with a burst of 2: at least (12 - 2) / 4 = 2.5 s, whatever the two workers do
    assert span >= 2.4, span
    print(f"12 calls over {span:.2f}s ({(len(arrivals) - 1) / span:.1f}/s)")


@pytest.mark.limits("{concurrency: 1}")
def test_concurrency_limit_is_shared_by_two_workers(two_workers: Stack, target: Target) -> None:
    target.delay = 0.2
    in_flight = {"now": 0, "max": 0}
    lock = threading.Lock()
    original = target.on_request

    def track(start: bool) -> None:
        with lock:
            in_flight["now"] += 1 if start else -1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])

    target.on_request = track
    store = two_workers.store
    ids = [two_workers.post({"n": i}).json()["run_id"] for i in range(6)]
    wait_for(lambda: statuses(store, ids) == ["succeeded"] * 6, timeout=40, what="all runs to succeed")
    target.on_request = original
    assert in_flight["max"] == 1
