"""PostgreSQL goes away for a few seconds while events arrive and runs are executing.

The outage is a TcpProxy between Hookline's processes and the server (tests/faults/infra.py): cutting
it resets every open connection and every new one, which is what clients see when PostgreSQL is
stopped with ``pg_ctl -m immediate``, without touching the shared cluster. The test reads the database
directly, so it can watch while Hookline cannot.

Expected: ingress answers 503 (never a 2xx for what it could not store, I1); providers retry; workers
keep running, pause and resume; every accepted event ends `succeeded` exactly once; no run is left
`running` (I4); side effects repeat only for an attempt cut off by the outage, with its Idempotency-Key.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.faults.infra import EventStream, Monitor, all_runs
from tests.faults.oracles import check_side_effects, check_stored, figures, reenqueued, wait_all_terminal
from tests.faults.test_redis_restart import PATHS, flow
from tests.support import Target

EVENTS = 100
STREAM_S = 12.0
DOWN_AT_S = 3.0
DOWN_FOR_S = 4.0


@pytest.mark.slow
def test_postgres_outage_503s_then_everything_resumes(make_stack: Any, target: Target, record_property: Any) -> None:
    target.delay = 0.02
    stack = make_stack("postgres", {"relay": flow(target.url)}, db_proxy=True)
    proxy = stack.db_proxy
    stack.start_web()
    workers = [stack.start_worker(name, threads=2) for name in ("worker-a", "worker-b")]
    warmup = EventStream(stack.url, "relay", 1, 0, make_body=lambda i: {"id": "warmup"}).start()
    warmup.join()
    wait_all_terminal(stack.store, [d.run_id for d in warmup.accepted], timeout=30, what="warm-up run")
    monitor = Monitor(stack.store, "relay").start()

    stream = EventStream(stack.url, "relay", EVENTS, STREAM_S, retry_until=45, retry_every=0.5).start()
    time.sleep(max(0.0, stream.started + DOWN_AT_S - time.monotonic()))  # fault schedule, not a wait for work
    proxy.cut()
    down_at = time.monotonic()
    running_at_cut = sum(1 for r in all_runs(stack.store, "relay") if r.status.value == "running")
    time.sleep(DOWN_FOR_S / 2)
    ready_during = httpx.get(f"{stack.url}/readyz", timeout=10).status_code
    time.sleep(DOWN_FOR_S / 2)
    proxy.restore()
    up_at = time.monotonic()
    stream.join()

    answers = stream.answer_counts()
    accepted = stream.accepted
    assert check_stored(stack.store, stream) == []  # I1: every 2xx names a stored run, body intact
    assert len(accepted) == EVENTS, f"events never accepted although providers retried: {answers}"
    refused = {k: v for k, v in answers.items() if not k.startswith("2")}
    assert set(refused) <= {"503"}, f"an outage must be a 503 (retry later), got {refused}"
    runs = [r for r in all_runs(stack.store, "relay") if r.dedupe_key != "warmup"]
    assert sorted(r.dedupe_key or "" for r in runs) == sorted(f"evt_{i:04d}" for i in range(EVENTS)), \
        "one event, one run (I2), even when a provider retried across the outage"
    run_ids = [d.run_id for d in accepted if d.run_id is not None]
    statuses = wait_all_terminal(stack.store, run_ids, timeout=60, what=stack.logs())
    monitor.stop()
    monitor.poll()
    assert Counter(statuses[i] for i in run_ids) == {"succeeded": EVENTS}
    assert all(p.poll() is None for p in workers), "a worker died of the outage instead of pausing"
    assert stack.procs["web"].poll() is None
    fx = check_side_effects(target, stack.store, {f"evt_{d.index:04d}": d.run_id for d in accepted
                                                  if d.run_id is not None}, PATHS)
    after = [d.accepted_at - up_at for d in accepted if d.accepted_at is not None and d.accepted_at > up_at]
    figures(
        "postgres_outage[postgres]", record_property,
        events_sent=EVENTS, outage_s=up_at - down_at, answers_503=refused.get("503", 0), readyz_during=ready_during,
        runs_running_at_cut=running_at_cut, accepted=len(accepted), succeeded=EVENTS, target_calls=fx.calls,
        duplicates_at_target=fx.duplicates, duplicates_beyond_at_least_once=len(fx.problems),
        reaper_reenqueues=reenqueued(stack.log_text()),
        max_answer_s=max(stream.latencies()),
        first_2xx_after_restore_s=min(after, default=0.0),
        recovery_after_restore_s=max(monitor.terminal_at[i] for i in run_ids) - up_at,
    )
    assert refused.get("503", 0) > 0, "no event arrived during the outage: the fault missed the stream"
    assert ready_during == 503
    assert fx.problems == []
