"""Service use cases on real stores (SQLite and PostgreSQL) with a real HTTP target."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from engine.model import RunStatus, StepStatus
from engine.store import Claim, LeaseLost
from tests.support import Target

FLOW = """
id: orders
trigger:
  dedupe: $.id
steps:
  - id: only_paid
    filter: event.type == "paid"
  - id: shape
    transform:
      ref: "{{{{ event.id }}}}"
  - id: create
    http:
      url: {url}/create
      json: {{ref: "{{{{ steps.shape.ref }}}}"}}
      retry: {{max_attempts: 3, initial: 10ms, max_delay: 20ms}}
  - id: notify
    http:
      url: {url}/notify
      json: {{created: "{{{{ steps.create.response.json.id }}}}"}}
"""


def accept(svc: Any, body: dict[str, Any], flow_id: str = "orders") -> Any:
    flow = svc.catalog.get(flow_id)
    raw = json.dumps(body).encode()
    return svc.accept_event(flow, method="POST", query_string="", headers=[("Content-Type", "application/json")],
                            body=raw, content_type="application/json", parsed=body)


def drain(svc: Any, queue: Any, limit: int = 50) -> None:
    """Execute queued tasks, honouring their delays (like a Huey consumer, without one)."""
    for _ in range(limit):
        if not queue.items:
            return
        run_id, delay = queue.pop()
        if delay:
            time.sleep(delay)
        svc.execute_run(run_id)
    raise AssertionError("queue did not drain")


def test_run_succeeds_and_every_step_is_stored(make_service: Any, db_url: str, target: Target) -> None:
    svc, queue = make_service({"orders": FLOW.format(url=target.url)}, db_url)
    accepted = accept(svc, {"id": "o1", "type": "paid"})
    assert queue.items == [(accepted.run_id, 0.0)]
    drain(svc, queue)
    detail = svc.store.get_run(accepted.run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert [(s.path, s.status) for s in detail.steps] == [
        ("only_paid", StepStatus.SUCCEEDED), ("shape", StepStatus.SUCCEEDED), ("create", StepStatus.SUCCEEDED),
        ("notify", StepStatus.SUCCEEDED)]
    assert detail.steps[1].output == {"ref": "o1"}
    assert target.requests("/notify")[0].json() == {"created": "t1"}
    assert detail.run.flow_version == svc.catalog.get("orders").version


def test_retry_is_a_scheduled_task_then_success(make_service: Any, db_url: str, target: Target) -> None:
    target.script["/create"] = [(503, {}), (503, {}), (201, {"id": "c1"})]
    svc, queue = make_service({"orders": FLOW.format(url=target.url)}, db_url)
    run_id = accept(svc, {"id": "o1", "type": "paid"}).run_id
    svc.execute_run(queue.pop()[0])
    assert svc.store.get_run_record(run_id).status is RunStatus.WAITING
    (rid, delay), = queue.items
    assert rid == run_id and 0 <= delay <= 0.01 + 0.05
    drain(svc, queue)
    detail = svc.store.get_run(run_id)
    creates = [s for s in detail.steps if s.path == "create"]
    assert [s.attempt for s in creates] == [1, 2, 3] and detail.run.status is RunStatus.SUCCEEDED
    assert len({r.headers["idempotency-key"] for r in target.requests("/create")}) == 1
    assert len(target.requests("/notify")) == 1  # done steps never repeat


def test_client_error_fails_at_once_and_is_replayable(make_service: Any, db_url: str, target: Target) -> None:
    target.script["/create"] = [(400, {"error": "bad email"}), (201, {"id": "c2"})]
    svc, queue = make_service({"orders": FLOW.format(url=target.url)}, db_url)
    run_id = accept(svc, {"id": "o1", "type": "paid"}).run_id
    drain(svc, queue)
    detail = svc.store.get_run(run_id)
    assert detail.run.status is RunStatus.FAILED and "400" in detail.run.error
    assert detail.steps[-1].response["status"] == 400 and "bad email" in detail.steps[-1].response["body"]
    retry_id = svc.retry_from_failed(run_id)
    drain(svc, queue)
    retry = svc.store.get_run(retry_id)
    assert retry.run.status is RunStatus.SUCCEEDED and retry.run.parent_run_id == run_id
    assert [s.path for s in retry.steps] == ["only_paid", "shape", "create", "notify"]
    assert len(target.requests("/create")) == 2  # the retry started at the failed step
    replay_id = svc.replay(run_id)
    drain(svc, queue)
    assert svc.store.get_run_record(replay_id).status is RunStatus.SUCCEEDED


def test_filtered_runs_end_filtered(make_service: Any, db_url: str, target: Target) -> None:
    svc, queue = make_service({"orders": FLOW.format(url=target.url)}, db_url)
    run_id = accept(svc, {"id": "o1", "type": "refund"}).run_id
    drain(svc, queue)
    assert svc.store.get_run_record(run_id).status is RunStatus.FILTERED and target.requests() == []


def test_worker_death_mid_step_is_recovered_with_same_key(make_service: Any, db_url: str, target: Target,
                                                          monkeypatch: Any) -> None:
    """Simulate a SIGKILL between a step's start and its result: the next claimer retries that step only."""
    svc, queue = make_service({"orders": FLOW.format(url=target.url)}, db_url, lease_s=0.2)
    run_id = accept(svc, {"id": "o1", "type": "paid"}).run_id

    class Dies(Exception):
        pass

    def die_before_the_last_result_is_committed(claim: Claim, *args: Any, **kwargs: Any) -> None:
        assert [r.path for r in claim.completed] == ["notify"]  # the last step's result goes with the outcome
        raise Dies()

    with monkeypatch.context() as patched:
        patched.setattr(Claim, "close", die_before_the_last_result_is_committed)
        queue.items.clear()
        try:
            svc.execute_run(run_id)
        except Dies:
            pass
    record = svc.store.get_run_record(run_id)
    assert record.status is RunStatus.RUNNING
    # the lease covers lease_s plus the step's timeout; look at the world just after it expires
    after_expiry = record.lease_expires_at + 1
    assert svc.reap(now=after_expiry) == [run_id]
    original_claim = svc.store.claim
    svc.store.claim = lambda rid, owner, lease_s, now=None, **kw: original_claim(rid, owner, lease_s,
                                                                          now=after_expiry, **kw)
    drain(svc, queue)
    detail = svc.store.get_run(run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    notify = [s for s in detail.steps if s.path == "notify"]
    assert [s.error_type for s in notify] == ["Interrupted", None]
    assert len(target.requests("/create")) == 1  # done steps stay done
    keys = [r.headers["idempotency-key"] for r in target.requests("/notify")]
    assert len(keys) == 2 and len(set(keys)) == 1


def test_lost_lease_stops_the_old_worker(make_service: Any, db_url: str, target: Target) -> None:
    svc, _queue = make_service({"orders": FLOW.format(url=target.url)}, db_url)
    run_id = accept(svc, {"id": "o1", "type": "paid"}).run_id
    from engine.model import RunResult

    old = svc.store.claim(run_id, "old", lease_s=1, now=1000.0)
    assert old is not None
    assert svc.store.claim(run_id, "new", lease_s=1e9) is not None
    with pytest.raises(LeaseLost):
        old.close(RunResult(RunStatus.FAILED))


ORDERED = """
id: ordered
trigger:
  order_by: $.order
steps:
  - id: call
    http:
      url: {url}/o/{{{{ event.order }}}}
      json: {{seq: "{{{{ event.seq }}}}"}}
      retry: {{max_attempts: 5, initial: 10ms, max_delay: 10ms}}
"""


def test_order_by_runs_one_key_at_a_time_in_receipt_order(make_service: Any, db_url: str, target: Target) -> None:
    target.script["/o/A"] = [(503, {}), (200, {"id": 1})]
    svc, queue = make_service({"ordered": ORDERED.format(url=target.url)}, db_url)
    a1 = accept(svc, {"order": "A", "seq": 1}, "ordered").run_id
    a2 = accept(svc, {"order": "A", "seq": 2}, "ordered").run_id
    b1 = accept(svc, {"order": "B", "seq": 1}, "ordered").run_id
    svc.execute_run(queue.pop()[0])  # a1 fails once -> waiting for retry
    svc.execute_run(queue.pop()[0])  # a2 must wait for a1
    assert svc.store.get_run_record(a2).status is RunStatus.WAITING
    assert "waiting for run" in svc.store.get_run_record(a2).reason
    svc.execute_run(queue.pop()[0])  # b1 is not blocked by A
    assert svc.store.get_run_record(b1).status is RunStatus.SUCCEEDED
    drain(svc, queue)
    assert svc.store.get_run_record(a1).status is RunStatus.SUCCEEDED
    assert svc.store.get_run_record(a2).status is RunStatus.SUCCEEDED
    assert [r.json()["seq"] for r in target.requests("/o/A")] == [1, 1, 2]


def test_flow_edits_do_not_change_runs_in_progress(make_service: Any, db_url: str, target: Target) -> None:
    svc, queue = make_service({"orders": FLOW.format(url=target.url)}, db_url)
    run_id = accept(svc, {"id": "o1", "type": "paid"}).run_id
    path = svc.catalog.directory / "orders.yaml"
    path.write_text(FLOW.format(url=target.url).replace("/notify", "/notify-v2") + "\n# v2\n")
    svc.catalog.refresh(force=True)
    drain(svc, queue)
    assert len(target.requests("/notify")) == 1 and target.requests("/notify-v2") == []
    new_id = accept(svc, {"id": "o2", "type": "paid"}).run_id
    drain(svc, queue)
    assert len(target.requests("/notify-v2")) == 1
    assert svc.store.get_run_record(new_id).flow_version != svc.store.get_run_record(run_id).flow_version


def test_each_result_is_committed_before_the_next_step_and_the_last_with_the_outcome(
        make_service: Any, db_url: str, target: Target) -> None:
    """I7 as an operator sees it, from another connection: while `notify` is being called, `create`
    is recorded succeeded and `notify` running. The run is taken by its first write, each result shares
    the next write's commit: 3 write transactions per run (create started, create result + notify
    started, notify result + outcome)."""
    from sqlalchemy import event

    from engine.store import RunStore

    svc, queue = make_service({"orders": FLOW.format(url=target.url)}, db_url)
    observer = RunStore(db_url)
    seen: list[list[tuple[str, StepStatus]]] = []

    def look(arriving: bool) -> None:
        if arriving and len(target.requests()) == 2:  # the notify call is in flight
            seen.append([(s.path, s.status) for s in observer.get_run(run_id).steps])

    run_id = accept(svc, {"id": "o1", "type": "paid"}).run_id
    target.on_request = look
    commits: list[int] = []
    event.listen(svc.store.engine, "commit",
                 lambda conn: commits.append(1) if conn.get_execution_options().get("hl_write") else None)
    try:
        drain(svc, queue)
    finally:
        observer.dispose()
    assert seen == [[("only_paid", StepStatus.SUCCEEDED), ("shape", StepStatus.SUCCEEDED),
                     ("create", StepStatus.SUCCEEDED), ("notify", StepStatus.RUNNING)]]
    detail = svc.store.get_run(run_id)
    assert detail.run.status is RunStatus.SUCCEEDED and detail.steps[-1].status is StepStatus.SUCCEEDED
    assert detail.steps[-1].response["status"] == 200 and detail.run.current_step is None
    assert len(commits) == 3


def test_a_failed_last_call_is_recorded_with_the_waiting_run(make_service: Any, db_url: str, target: Target) -> None:
    """A retryable failure of the last step is committed with the run's `waiting` outcome, then retried."""
    target.script["/notify"] = [(503, {}), (200, {"id": "n1"})]
    svc, queue = make_service({"orders": FLOW.format(url=target.url)}, db_url)
    run_id = accept(svc, {"id": "o1", "type": "paid"}).run_id
    svc.execute_run(queue.pop()[0])
    detail = svc.store.get_run(run_id)
    assert detail.run.status is RunStatus.WAITING
    assert [(s.path, s.attempt, s.status) for s in detail.steps][-1] == ("notify", 1, StepStatus.FAILED)
    assert detail.steps[-1].response["status"] == 503
    drain(svc, queue)
    steps = svc.store.get_run(run_id).steps
    assert [(s.path, s.attempt, s.status) for s in steps if s.path == "notify"] == [
        ("notify", 1, StepStatus.FAILED), ("notify", 2, StepStatus.SUCCEEDED)]
