"""The target of an http step is down for a while, then up; and a target that rejects with a 4xx.

Down: the target sits behind a TcpProxy we cut (connections reset, nothing reaches it). Runs must
retry with the flow's backoff (full jitter under a growing ceiling), or wait while the host's circuit
breaker is open (HOOKLINE_BREAKER_COOLDOWN_S shortened to 1 s here; a held step is not an attempt),
and complete once it is back, each event reaching the target exactly once. A 4xx (not 408/429) fails
the run at once, with the target's response stored on the failed step so the operator sees why.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.faults.conftest import BACKENDS
from tests.faults.infra import EventStream, Monitor, TcpProxy
from tests.faults.oracles import check_side_effects, check_stored, figures, wait_all_terminal
from tests.support import Target, http_step, signed_flow

INITIAL_S = 0.2
MAX_DELAY_S = 1.0
EVENTS = 20
DOWN_FOR_S = 4.0


def flow(url: str) -> str:
    return signed_flow("deliver", http_step("push", f"{url}/push", {"ref": "$.id", "n": "$.n"}, timeout="2s",
                                            retry={"max_attempts": 30, "initial": "200ms", "max_delay": "1s"}))


def ceiling(attempt: int) -> float:
    """The largest delay the flow's policy allows after attempt ``attempt`` (full jitter picks below it)."""
    return min(MAX_DELAY_S, INITIAL_S * 2 ** (attempt - 1))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_target_down_then_up_runs_back_off_and_complete(
    backend: str, make_stack: Any, target: Target, record_property: Any
) -> None:
    host, port = target.server.server_address[:2]
    proxy = TcpProxy(str(host), int(port))
    try:
        # a short breaker cooldown: the circuit opens during the outage and probes again within a second
        stack = make_stack(backend, {"deliver": flow(f"http://127.0.0.1:{proxy.port}")},
                           env={"HOOKLINE_BREAKER_COOLDOWN_S": "1"})
        stack.start_web(workers=1)
        stack.start_worker("worker", threads=4)
        warmup = EventStream(stack.url, "deliver", 1, 0, make_body=lambda i: {"id": "warmup", "n": -1}).start()
        warmup.join()
        wait_all_terminal(stack.store, [d.run_id for d in warmup.accepted], timeout=30, what="warm-up run")
        monitor = Monitor(stack.store, "deliver").start()

        proxy.cut()
        down_at = time.monotonic()
        stream = EventStream(stack.url, "deliver", EVENTS, 2.0).start()
        stream.join()
        first = [d.run_id for d in stream.accepted if d.run_id is not None]
        time.sleep(max(0.0, down_at + DOWN_FOR_S - time.monotonic()))  # the outage lasts this long
        waiting = sum(1 for i in first if monitor.status.get(i) == "waiting")
        proxy.restore()
        up_at = time.monotonic()
        statuses = wait_all_terminal(stack.store, first, timeout=60, what=stack.logs())
        monitor.stop()
        monitor.poll()
    finally:
        proxy.close()

    assert len(first) == EVENTS and check_stored(stack.store, stream) == []
    assert Counter(statuses[i] for i in first) == {"succeeded": EVENTS}
    assert all(monitor.terminal_at[i] >= up_at for i in first), "a run succeeded while its target was down"
    fx = check_side_effects(target, stack.store, {f"evt_{d.index:04d}": d.run_id for d in stream.accepted
                                                  if d.run_id is not None}, {"/push": "push"})
    assert fx.problems == [] and fx.duplicates == 0, "nothing reached the dead target, so nothing may repeat"
    attempts: list[int] = []
    backoff_problems = []
    for run_id in first:
        rows = [s for s in stack.store.get_run(run_id).steps if s.path == "push"]
        attempts.append(len(rows))
        assert [s.attempt for s in rows] == list(range(1, len(rows) + 1))
        assert rows[-1].status.value == "succeeded" and all(s.status.value == "failed" for s in rows[:-1])
        for prev, nxt in zip(rows, rows[1:], strict=False):
            assert prev.error_type == "HttpStepError" and prev.retry_at is not None and prev.finished_at is not None
            delay = prev.retry_at - prev.finished_at
            if not 0 <= delay <= ceiling(prev.attempt) + 0.01:
                backoff_problems.append(f"run {run_id} attempt {prev.attempt}: delay {delay:.2f}s")
            assert nxt.started_at is not None and nxt.started_at >= prev.retry_at - 0.6  # queue tick slack
    figures(
        f"target_down_then_up[{backend}]", record_property,
        events_sent=EVENTS, accepted=len(first), succeeded=EVENTS, outage_s=up_at - down_at,
        waiting_at_restore=waiting, attempts_total=sum(attempts), max_attempts=max(attempts),
        circuit_opened=stack.log_text().count("circuit opened for"), target_calls=fx.calls,
        duplicates_at_target=fx.duplicates,
        recovery_after_target_up_s=max(monitor.terminal_at[i] for i in first) - up_at,
    )
    assert backoff_problems == []
    assert max(attempts) >= 2, "no run retried against the dead target"


@pytest.mark.parametrize("backend", BACKENDS)
def test_target_4xx_fails_the_run_at_once_with_the_response_stored(
    backend: str, make_stack: Any, target: Target, record_property: Any
) -> None:
    rejection = {"error": "email is invalid", "field": "email"}
    target.script["/push"] = [(422, rejection)]
    stack = make_stack(backend, {"deliver": flow(target.url)})
    stack.start_web(workers=1)
    stack.start_worker("worker", threads=2)
    stream = EventStream(stack.url, "deliver", 5, 0.5).start()
    stream.join()
    run_ids = [d.run_id for d in stream.accepted if d.run_id is not None]
    assert len(run_ids) == 5
    statuses = wait_all_terminal(stack.store, run_ids, timeout=30, what=stack.logs())
    assert set(statuses[i] for i in run_ids) == {"failed"}
    for run_id in run_ids:
        detail = stack.store.get_run(run_id)
        [push] = detail.steps  # one attempt: a 4xx is not retried
        assert push.attempt == 1 and push.error_type == "HttpStepError"
        assert push.response is not None and push.response["status"] == 422
        assert "email is invalid" in push.response["body"]
        assert "422" in (detail.run.error or "") and "not retryable" in (push.error_message or "")
    page = httpx.get(f"{stack.url}/runs/{run_ids[0]}.json", timeout=10)  # the run page's JSON twin shows it too
    assert page.status_code == 200 and "email is invalid" in page.text and "422" in page.text
    assert len(target.requests("/push")) == 5
    figures(f"target_4xx[{backend}]", record_property, events_sent=5, failed=5, target_calls=5, attempts_each=1)
