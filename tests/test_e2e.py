"""Real processes end to end: gunicorn web workers, Huey worker processes, a real target, both backends.

Embedded: SQLite + Huey on SQLite. Scale-out: PostgreSQL + Huey on Redis.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.store import RunStore
from tests.support import Stack, Target, http_step, make_stack, signed_flow, wait_for

SECRET = "whsec_e2e_secret"


def flow(url: str) -> str:
    return signed_flow(
        "pay",
        {"id": "only_paid", "filter": 'event.type == "paid"'},
        {"id": "shape", "transform": {"ref": "$.id", "cents": "{{ event.amount * 100 }}"}},
        http_step("crm", f"{url}/crm", {"ref": "{{ steps.shape.ref }}"}, timeout="5s",
                  retry={"max_attempts": 4, "initial": "300ms", "max_delay": "1s"}),
        http_step("slow", f"{url}/slow", {"crm_id": "{{ steps.crm.response.json.id }}"}, timeout="5s"),
        http_step("invoice", f"{url}/invoice", {"ref": "{{ steps.shape.ref }}", "cents": "{{ steps.shape.cents }}"}),
    )


@pytest.fixture(params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path: Path, target: Target) -> Iterator[Stack]:
    yield from make_stack(request, tmp_path, {"pay": flow(target.url)}, {"STRIPE_SECRET": SECRET})


def runs(stack: Stack) -> RunStore:
    return stack.store


def status_of(store: RunStore, run_id: int) -> str:
    record = store.get_run_record(run_id)
    return record.status.value if record else "missing"


EVENT = {"id": "evt_1", "type": "paid", "amount": 12.5}


def test_signed_event_over_http_succeeds_with_every_step_stored(stack: Stack, target: Target) -> None:
    stack.start_web()
    stack.start("worker", "worker", "--workers", "2")
    resp = stack.post(EVENT)
    assert resp.status_code == 202, resp.text
    store = runs(stack)
    run_id = resp.json()["run_id"]
    wait_for(lambda: status_of(store, run_id) == "succeeded", timeout=30, what=f"run succeeded\n{stack.logs()}")
    detail = store.get_run(run_id)
    assert [s.path for s in detail.steps] == ["only_paid", "shape", "crm", "slow", "invoice"]
    assert detail.steps[1].output == {"ref": "evt_1", "cents": 1250.0}
    assert target.requests("/invoice")[0].json() == {"ref": "evt_1", "cents": 1250.0}
    assert all(s.output is not None for s in detail.steps)


def test_fifty_concurrent_copies_make_one_run(stack: Stack) -> None:
    stack.start_web(workers=2)
    results: list[httpx.Response] = []
    barrier = threading.Barrier(50)

    def send() -> None:
        barrier.wait()
        results.append(stack.post({"id": "evt_same", "type": "refund"}))

    threads = [threading.Thread(target=send) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(202) == 1 and statuses.count(200) == 49, statuses
    assert len({r.json()["run_id"] for r in results}) == 1
    page = runs(stack).list_runs(flow="pay")
    assert len(page.runs) == 1 and page.runs[0].deliveries == 50


def test_sigkilled_worker_is_recovered_and_succeeded_steps_run_once(stack: Stack, target: Target) -> None:
    target.stall_first["/slow"] = 3.0  # the worker is killed while waiting for this answer
    stack.start_web()
    first = stack.start("worker1", "worker", "--workers", "1")
    run_id = stack.post(EVENT).json()["run_id"]
    wait_for(lambda: target.requests("/slow"), timeout=20, what="the slow step to start")
    first.send_signal(signal.SIGKILL)
    first.wait(5)
    store = runs(stack)
    assert status_of(store, run_id) == "running"
    t0 = time.monotonic()
    stack.start("worker2", "worker", "--workers", "1")
    wait_for(lambda: status_of(store, run_id) == "succeeded", timeout=40, what=f"recovery\n{stack.logs()}")
    recovery = time.monotonic() - t0
    print(f"recovered in {recovery:.1f}s")
    assert len(target.requests("/crm")) == 1 and len(target.requests("/invoice")) == 1
    slow = target.requests("/slow")
    assert len(slow) in (1, 2) and len({r.headers["idempotency-key"] for r in slow}) == 1
    steps = [s for s in store.get_run(run_id).steps if s.path == "slow"]
    assert steps[0].error_type == "Interrupted" and steps[-1].status.value == "succeeded"


def test_two_503s_then_success_on_attempt_three(stack: Stack, target: Target) -> None:
    target.script["/crm"] = [(503, {}), (503, {}), (201, {"id": "c1"})]
    stack.start_web(workers=1)
    stack.start("worker", "worker", "--workers", "1")
    run_id = stack.post(EVENT).json()["run_id"]
    store = runs(stack)
    wait_for(lambda: status_of(store, run_id) == "succeeded", timeout=30, what=f"success\n{stack.logs()}")
    crm = [s for s in store.get_run(run_id).steps if s.path == "crm"]
    assert [s.attempt for s in crm] == [1, 2, 3] and crm[-1].status.value == "succeeded"
    # delays: full jitter in [0, min(1s, 300ms * 2**(n-1))], plus scheduling slack
    for prev, nxt, ceiling in ((crm[0], crm[1], 0.3), (crm[1], crm[2], 0.6)):
        assert prev.retry_at is not None and 0 <= prev.retry_at - prev.finished_at <= ceiling + 0.01
        assert nxt.started_at >= prev.retry_at - 0.6  # Huey may fire up to its check interval early/late
    arrivals = target.requests("/crm")
    assert len(arrivals) == 3 and len({r.headers["idempotency-key"] for r in arrivals}) == 1


def test_400_fails_the_run_at_once(stack: Stack, target: Target) -> None:
    target.script["/crm"] = [(400, {"error": "invalid email"})]
    stack.start_web(workers=1)
    stack.start("worker", "worker", "--workers", "1")
    run_id = stack.post(EVENT).json()["run_id"]
    store = runs(stack)
    wait_for(lambda: status_of(store, run_id) == "failed", timeout=30, what="failure")
    detail = store.get_run(run_id)
    assert "400" in (detail.run.error or "") and len(target.requests("/crm")) == 1
    assert target.requests("/slow") == [] and detail.steps[-1].response["status"] == 400


def test_no_2xx_while_the_database_is_down(stack: Stack, tmp_path: Path) -> None:
    """Point a web server at a database that is not there: every webhook gets a 5xx, never a 2xx."""
    if stack.db_url.startswith("sqlite"):
        stack.env["HOOKLINE_DATABASE_URL"] = f"sqlite:///{tmp_path}/missing-dir/none.db"
    else:
        stack.env["HOOKLINE_DATABASE_URL"] = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=1"
    stack.start_web(workers=1)
    codes = {stack.post({"id": f"e{i}", "type": "paid"}).status_code for i in range(5)}
    assert codes == {503}
    assert httpx.get(f"{stack.url}/readyz").status_code == 503
