"""SIGKILL a worker while a foreach item's call is in flight, then let a new worker resume the run.

A 5-item foreach; the target holds the request of item 3 while the worker is killed. The new worker
takes the run over once the lease has expired: items 1-2 are done and never repeated (I5), item 3 is
called again with the same Idempotency-Key (I6; its interrupted attempt is recorded), items 4-5 are
called once, and the run succeeds (I4).
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from engine.model import RunStatus
from engine.runner import idempotency_key
from tests.faults.conftest import BACKENDS
from tests.faults.infra import EventStream
from tests.faults.oracles import check_side_effects, figures, wait_all_terminal
from tests.support import Target, signed_flow, wait_for

ITEMS = [{"sku": f"sku-{i}", "quantity": i} for i in range(1, 6)]
HOLD_S = 6.0  # the held request outlives the kill; the worker's step timeout (2 s) is never what ends it


def flow(url: str) -> str:
    decrement = {"id": "decrement", "http": {
        "method": "POST", "url": f"{url}/decrement/{{{{ item.sku }}}}", "timeout": "2s",
        "json": {"ref": "{{ event.id }}", "sku": "{{ item.sku }}", "qty": "{{ item.quantity }}"},
        "retry": {"max_attempts": 3, "initial": "200ms", "max_delay": "1s"}}}
    return signed_flow("each", {"id": "lines", "foreach": "$.line_items", "steps": [decrement]})


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_during_item_3_resumes_at_item_3_with_its_key(
    backend: str, make_stack: Any, target: Target, record_property: Any
) -> None:
    target.stall_first["/decrement/sku-3"] = HOLD_S
    stack = make_stack(backend, {"each": flow(target.url)})
    stack.start_web(workers=1)
    first = stack.start_worker("worker-1", threads=1)
    stream = EventStream(stack.url, "each", 1, 0, make_body=lambda i: {"id": "order-1", "line_items": ITEMS}).start()
    stream.join()
    (delivery,) = stream.accepted
    run_id = delivery.run_id
    assert run_id is not None

    wait_for(lambda: target.requests("/decrement/sku-3"), timeout=30, what=f"item 3's call\n{stack.logs()}")
    first.send_signal(signal.SIGKILL)
    killed_at = time.time()
    first.wait(5)
    held = stack.store.get_run(run_id)
    assert held.run.status is RunStatus.RUNNING
    assert [(s.path, s.status.value) for s in held.steps] == [
        ("lines[0].decrement", "succeeded"), ("lines[1].decrement", "succeeded"), ("lines[2].decrement", "running")]

    stack.start_worker("worker-2", threads=1)
    statuses = wait_all_terminal(stack.store, [run_id], timeout=30, what=stack.logs())
    assert statuses[run_id] == "succeeded"

    calls = {f"sku-{i}": target.requests(f"/decrement/sku-{i}") for i in range(1, 6)}
    assert {sku: len(reqs) for sku, reqs in calls.items()} == {"sku-1": 1, "sku-2": 1, "sku-3": 2, "sku-4": 1,
                                                              "sku-5": 1}
    for i in range(5):
        key = idempotency_key("each", run_id, f"lines[{i}].decrement")
        assert {r.headers["idempotency-key"] for r in calls[f"sku-{i + 1}"]} == {key}
    assert all(calls[f"sku-{i}"][0].at > calls["sku-3"][1].at for i in (4, 5))  # in item order, after the repeat

    detail = stack.store.get_run(run_id)
    assert [(s.path, s.attempt, s.status.value, s.error_type) for s in detail.steps] == [
        ("lines[0].decrement", 1, "succeeded", None), ("lines[1].decrement", 1, "succeeded", None),
        ("lines[2].decrement", 1, "failed", "Interrupted"), ("lines[2].decrement", 2, "succeeded", None),
        ("lines[3].decrement", 1, "succeeded", None), ("lines[4].decrement", 1, "succeeded", None),
        ("lines", 1, "succeeded", None)]
    paths = {f"/decrement/sku-{i + 1}": f"lines[{i}].decrement" for i in range(5)}
    fx = check_side_effects(target, stack.store, {"order-1": run_id}, paths)
    assert fx.problems == []
    takeover = min(s.started_at for s in detail.steps if s.started_at and s.started_at > killed_at) - killed_at
    figures(f"foreach_kill[{backend}]", record_property, target_calls=fx.calls, repeated_calls=fx.duplicates,
            takeover_s=takeover, run_s=(detail.run.finished_at or 0.0) - (detail.run.started_at or 0.0))
