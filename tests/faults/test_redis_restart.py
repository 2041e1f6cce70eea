"""Redis dies (SIGKILL, no persistence: every queued message is lost) and comes back while events arrive.

The design (engine/service.py accept_event): the database is the record. Ingress commits the run, then
enqueues; when the enqueue fails it still answers 202, and the reaper (a thread of every worker) enqueues
queued runs older than HOOKLINE_QUEUED_GRACE_S once the queue is reachable and looks empty. So: every
2xx names a stored run, and every accepted event is processed once Redis is back.

Only the scale-out set-up has a Redis; the embedded one queues in SQLite next to its database.
The Redis here is a private redis-server of this test, never the shared one on 6379.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from tests.faults.infra import EventStream, Monitor, RedisServer
from tests.faults.oracles import check_side_effects, check_stored, figures, reenqueued, wait_all_terminal
from tests.support import Target, http_step, signed_flow

RETRY = {"max_attempts": 8, "initial": "200ms", "max_delay": "1s"}
PATHS = {"/crm": "crm", "/notify": "notify"}
EVENTS = 100
STREAM_S = 12.0
DOWN_AT_S = 3.0
DOWN_FOR_S = 4.0


def flow(url: str) -> str:
    ref = {"ref": "{{ steps.shape.ref }}"}
    return signed_flow("relay", {"id": "shape", "transform": {"ref": "$.id"}},
                       http_step("crm", f"{url}/crm", ref, timeout="2s", retry=RETRY),
                       http_step("notify", f"{url}/notify", ref, timeout="2s", retry=RETRY))


@pytest.mark.slow
def test_redis_restart_acknowledged_events_are_all_processed(
    make_stack: Any, own_redis: RedisServer, target: Target, record_property: Any
) -> None:
    target.delay = 0.02
    stack = make_stack("postgres", {"relay": flow(target.url)})
    stack.start_web()
    for name in ("worker-a", "worker-b"):
        stack.start_worker(name, threads=2)
    warmup = EventStream(stack.url, "relay", 1, 0, make_body=lambda i: {"id": "warmup"}).start()
    warmup.join()
    wait_all_terminal(stack.store, [d.run_id for d in warmup.accepted], timeout=30, what="warm-up run")
    monitor = Monitor(stack.store, "relay").start()

    stream = EventStream(stack.url, "relay", EVENTS, STREAM_S).start()
    time.sleep(max(0.0, stream.started + DOWN_AT_S - time.monotonic()))  # fault schedule, not a wait for work
    own_redis.kill()
    down_at = time.monotonic()
    time.sleep(DOWN_FOR_S)
    own_redis.start()
    up_at = time.monotonic()
    stream.join()

    answers = stream.answer_counts()
    accepted = stream.accepted
    during = [d for d in accepted if d.accepted_at is not None and down_at <= d.accepted_at <= up_at]
    assert check_stored(stack.store, stream) == []  # I1: a 2xx always names a stored run, body intact
    assert len(accepted) == EVENTS, f"the database is the record: Redis down must not refuse events; {answers}"
    run_ids = [d.run_id for d in accepted if d.run_id is not None]
    statuses = wait_all_terminal(stack.store, run_ids, timeout=60, what=stack.logs())
    monitor.stop()
    monitor.poll()
    assert Counter(statuses[i] for i in run_ids) == {"succeeded": EVENTS}
    fx = check_side_effects(target, stack.store, {f"evt_{d.index:04d}": d.run_id for d in accepted
                                                  if d.run_id is not None}, PATHS)
    logs = stack.log_text()
    figures(
        "redis_restart[postgres]", record_property,
        events_sent=EVENTS, accepted=len(accepted), non_2xx_answers=sum(v for k, v in answers.items()
                                                                        if not k.startswith("2")),
        accepted_while_redis_down=len(during), failed_enqueues_logged=logs.count("could not enqueue run"),
        reaper_reenqueues=reenqueued(logs),
        succeeded=EVENTS, target_calls=fx.calls, duplicates_at_target=fx.duplicates,
        duplicates_beyond_at_least_once=len(fx.problems),
        max_answer_s=max(stream.latencies()),
        recovery_after_redis_up_s=max((monitor.terminal_at[d.run_id] - up_at for d in during
                                       if d.run_id is not None), default=0.0),
    )
    assert during, "no event arrived while Redis was down: the fault missed the stream"
    assert fx.problems == []
