"""RunStore on real SQLite and PostgreSQL (the `store` fixture runs each test on both)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from engine.errors import StoreUnavailable
from engine.model import RunResult, RunStatus, Step, StepResult, StepStatus
from engine.store import Claim, LeaseLost, RunStore


def accept(store: RunStore, key: str | None = "k1", order: str | None = None, body: bytes = b'{"id": 1}',
           flow: str = "f") -> int:
    return store.accept(flow_id=flow, version="v1", source="steps: []", path="f.yaml", method="POST", query="",
                        headers=[("Content-Type", "application/json")], body=body, content_type="application/json",
                        dedupe_key=key, order_key=order).run_id


def call(path: str = "call", index: int = 0) -> Step:
    """A step with side effects, as the runner hands it to the recorder."""
    return Step(path, "http", None, index=index)


def claimed(store: RunStore, run_id: int, owner: str = "w1", **kw: Any) -> Claim:
    claim = store.claim(run_id, owner, lease_s=30, **kw)
    assert claim is not None
    return claim


def test_accept_stores_raw_event_and_queued_run(store: RunStore) -> None:
    raw = b'{"id": 1,  "odd spacing": true}\n'
    run_id = accept(store, body=raw)
    detail = store.get_run(run_id)
    assert detail is not None
    assert detail.run.status is RunStatus.QUEUED
    assert detail.event.body == raw  # bytes exactly as received
    assert detail.event.headers == [("Content-Type", "application/json")]
    assert store.flow_source("v1") == ("f", "steps: []", "f.yaml")


def test_duplicates_return_the_first_run(store: RunStore) -> None:
    first = accept(store)
    again = store.accept(flow_id="f", version="v1", source="", path="", method="POST", query="", headers=[],
                         body=b"{}", content_type="", dedupe_key="k1")
    assert again.duplicate and again.run_id == first
    assert store.get_run(first).run.deliveries == 2  # type: ignore[union-attr]
    assert accept(store, key=None) != accept(store, key=None)  # no key: no dedupe


def test_concurrent_duplicates_make_one_run(store: RunStore) -> None:
    results: list[int] = []
    barrier = threading.Barrier(10)

    def go() -> None:
        barrier.wait()
        results.append(accept(store, key="same"))

    threads = [threading.Thread(target=go) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 10


def test_claim_is_exclusive_and_lease_expiry_hands_over(store: RunStore) -> None:
    run_id = accept(store)
    first = claimed(store, run_id, now=1000.0)
    assert store.claim(run_id, "w2", lease_s=30, now=1010.0) is None  # leased
    claim = store.claim(run_id, "w2", lease_s=30, now=1031.0)  # expired: taken over
    assert claim is not None and claim.run.lease_owner == "w2"
    with pytest.raises(LeaseLost):  # the old owner must not finish the run
        first.close(RunResult(RunStatus.SUCCEEDED))


def test_interrupted_attempt_is_marked_and_counted(store: RunStore) -> None:
    run_id = accept(store)
    claimed(store, run_id, now=1000.0).step_started(call(), "call", 1, 1000.0, "k")
    claim = store.claim(run_id, "w2", lease_s=30, now=time.time() + 3600)  # the start renewed the lease from now
    assert claim is not None
    [step] = claim.steps
    assert step.status is StepStatus.FAILED and step.error_type == "Interrupted" and step.idempotency_key == "k"


def test_finish_and_terminal_runs_cannot_be_claimed(store: RunStore) -> None:
    run_id = accept(store)
    claim = claimed(store, run_id)
    claim.step_finished(StepResult("t", StepStatus.SUCCEEDED, output={"a": 1}))
    claim.close(RunResult(RunStatus.SUCCEEDED))
    assert store.claim(run_id, "w2", lease_s=30, now=9e12) is None
    detail = store.get_run(run_id)
    assert detail is not None and detail.run.status is RunStatus.SUCCEEDED and detail.steps[0].output == {"a": 1}


def test_lazy_claim_reads_a_fresh_run_and_its_first_write_takes_it(store: RunStore) -> None:
    """Two workers may read one fresh run; the first write wins, the loser writes nothing (I5, I6)."""
    run_id = accept(store)
    a = store.claim(run_id, "w1", lease_s=30, now=1000.0, lazy=True)
    b = store.claim(run_id, "w2", lease_s=30, now=1001.0, lazy=True)
    assert a is not None and b is not None and a.claim_at == 1000.0 and a.event.body == b'{"id": 1}'
    assert a.source == "steps: []" and a.steps == []
    assert store.get_run(run_id).run.status is RunStatus.QUEUED  # type: ignore[union-attr]  # only read
    for claim in (a, b):
        claim.step_finished(StepResult("t", StepStatus.SUCCEEDED))
    a.step_started(call(), "call", 1, 1000.0, "k")
    with pytest.raises(LeaseLost, match="taken by another worker"):
        b.step_started(call(), "call", 1, 1000.0, "k")
    detail = store.get_run(run_id)
    assert detail is not None and detail.run.status is RunStatus.RUNNING and detail.run.lease_owner == "w1"
    assert detail.run.started_at == 1000.0 and [s.path for s in detail.steps] == ["t", "call"]
    assert store.claim(run_id, "w3", lease_s=30, now=time.time(), lazy=True) is None  # leased now


def test_lazy_claim_of_a_run_that_ends_at_once(store: RunStore) -> None:
    run_id = accept(store)
    claim = store.claim(run_id, "w1", lease_s=30, now=1000.0, lazy=True)
    assert claim is not None
    other = claimed(store, run_id, "w2", now=1000.2, lazy=True)
    claim.step_finished(StepResult("only_paid", StepStatus.FILTERED))
    claim.close(RunResult(RunStatus.FILTERED), now=1000.5)
    record = store.get_run_record(run_id)
    assert record is not None and record.status is RunStatus.FILTERED and record.lease_owner is None
    assert (record.started_at, record.finished_at) == (1000.0, 1000.5)
    with pytest.raises(LeaseLost):  # a second reader finds it done
        other.close(RunResult(RunStatus.SUCCEEDED))


def sync_levels(store: RunStore) -> list[str]:
    """The sync level of every commit from now on: "durable" (waits for the disk) or "lax"."""
    from sqlalchemy import event

    levels: list[str] = []

    def on_commit(conn: Any) -> None:
        raw = conn.connection.dbapi_connection
        if store.dialect == "sqlite":
            levels.append({1: "lax", 2: "durable"}[raw.execute("PRAGMA synchronous").fetchone()[0]])
        else:
            levels.append({"off": "lax", "on": "durable"}[raw.execute("SHOW synchronous_commit").fetchone()[0]])

    event.listen(store.engine, "commit", on_commit)
    return levels


def test_only_a_step_start_commits_without_waiting_for_the_disk(store: RunStore) -> None:
    """I1 and I5 survive a power cut: acceptance, results and outcomes are synced; a step's start is not."""
    levels = sync_levels(store)
    run_id = accept(store)
    claim = store.claim(run_id, "w1", lease_s=30, lazy=True)
    assert claim is not None
    del levels[1:]  # the claim's read
    claim.step_started(call(), "call", 1, 1000.0, "k")
    claim.step_finished(StepResult("call", StepStatus.SUCCEEDED, 1))
    claim.step_started(call("next", 1), "next", 1, 1000.1, "k2")  # carries a result
    claim.step_finished(StepResult("next", StepStatus.SUCCEEDED, 1))
    claim.close(RunResult(RunStatus.SUCCEEDED))
    accept(store, key="k2")
    assert levels == ["durable", "lax", "durable", "durable", "durable"]
    detail = store.get_run(run_id)
    assert detail is not None and [(s.path, s.status) for s in detail.steps] == [
        ("call", StepStatus.SUCCEEDED), ("next", StepStatus.SUCCEEDED)]


def test_results_of_attempts_in_flight_together_ride_with_the_next_write(store: RunStore) -> None:
    """A foreach with concurrency 2: two calls start before either result arrives. Each start commits (the
    second carries no result: not synced); both results are synced with the next start (I7), and the lease
    covers the slowest call in flight."""
    run_id = accept(store)
    claim = claimed(store, run_id, lazy=True, default_timeout=10.0)
    levels = sync_levels(store)
    slow = Step("lines[0].post", "http", type("Config", (), {"timeout": 600.0})(), index=0)
    claim.step_started(slow, "lines[0].post", 1, 1000.0, "k0")
    claim.step_started(call("post", 0), "lines[1].post", 1, 1000.0, "k1")
    assert claim.lease_until is not None and claim.lease_until - time.time() > 600  # the slow call is in flight
    claim.step_finished(StepResult("lines[1].post", StepStatus.SUCCEEDED, 1, output=1))
    claim.step_finished(StepResult("lines[0].post", StepStatus.SUCCEEDED, 1, output=0))
    claim.step_finished(StepResult("total", StepStatus.SUCCEEDED, output=2))  # a pure step after the loop
    claim.step_started(call("notify", 1), "notify", 1, 1000.2, "k2")
    assert claim.lease_until - time.time() < 60  # nothing slow in flight any more
    claim.step_finished(StepResult("notify", StepStatus.SUCCEEDED, 1))
    claim.close(RunResult(RunStatus.SUCCEEDED))
    assert levels == ["lax", "lax", "durable", "durable"]
    detail = store.get_run(run_id)
    assert detail is not None and [(s.path, s.status, s.output) for s in detail.steps] == [
        ("lines[0].post", StepStatus.SUCCEEDED, 0), ("lines[1].post", StepStatus.SUCCEEDED, 1),
        ("total", StepStatus.SUCCEEDED, 2), ("notify", StepStatus.SUCCEEDED, None)]


def test_lazy_claim_leases_at_once_what_is_not_fresh(store: RunStore) -> None:
    """Ordered runs (their blocker is checked under the lock) and runs already started are claimed as before."""
    ordered = accept(store, key="o", order="cust-1")
    claim = store.claim(ordered, "w1", lease_s=30, now=1000.0, lazy=True)
    assert claim is not None and claim.claim_at is None and claim.run.lease_owner == "w1"
    retried = accept(store, key="r")
    claimed(store, retried, now=1000.0).close(RunResult(RunStatus.WAITING, next_attempt_at=1100.0), now=1000.0)
    claim = store.claim(retried, "w2", lease_s=30, now=1100.0, lazy=True)
    assert claim is not None and claim.claim_at is None and claim.run.lease_owner == "w2"
    assert store.claim(retried, "w3", lease_s=30, now=1100.0, lazy=True) is None


def test_waiting_runs_are_not_claimed_before_their_time(store: RunStore) -> None:
    run_id = accept(store)
    claimed(store, run_id, now=1000.0).close(RunResult(RunStatus.WAITING, next_attempt_at=1100.0), now=1000.0)
    assert store.claim(run_id, "w2", lease_s=30, now=1050.0) is None
    assert store.claim(run_id, "w2", lease_s=30, now=1100.0) is not None


def test_due_runs(store: RunStore) -> None:
    fresh = accept(store, key="a")
    stale = store.accept(flow_id="f", version="v1", source="", path="", method="POST", query="", headers=[],
                         body=b"{}", content_type="", dedupe_key="b", now=100.0).run_id
    leased = accept(store, key="c")
    store.claim(leased, "w", lease_s=10, now=200.0)
    due = store.due_runs(now=1000.0, queued_grace=10, requeue_after=5)
    assert stale in due and leased in due
    assert store.due_runs(now=1001.0, queued_grace=10, requeue_after=5) == []  # handed out once per window
    assert set(store.due_runs(now=1006.0, queued_grace=10, requeue_after=5)) == {stale, leased}
    assert fresh not in store.due_runs(now=__import__("time").time(), queued_grace=10, requeue_after=5)


def test_order_key_blocks_later_runs(store: RunStore) -> None:
    first = accept(store, key="a", order="order-1")
    second = accept(store, key="b", order="order-1")
    other = accept(store, key="c", order="order-2")
    assert store.claim(second, "w", lease_s=30) is None
    assert "waiting for run" in (store.get_run_record(second).reason or "")  # type: ignore[union-attr]
    assert store.claim(other, "w", lease_s=30) is not None
    claimed(store, first, "w").close(RunResult(RunStatus.FAILED, error="x"))
    assert store.next_in_order("f", "order-1") == second
    assert store.claim(second, "w", lease_s=30) is not None


def test_list_runs_keyset_filters_and_search(store: RunStore) -> None:
    ids = [accept(store, key=f"k{i}", body=f'{{"n": {i}, "email": "user{i}@x.test"}}'.encode()) for i in range(7)]
    page = store.list_runs(limit=3)
    assert [r.id for r in page.runs] == ids[::-1][:3] and page.next_cursor == ids[4]
    page2 = store.list_runs(limit=3, cursor=page.next_cursor)
    assert [r.id for r in page2.runs] == ids[::-1][3:6]
    assert [r.id for r in store.list_runs(q="k3").runs] == [ids[3]]
    assert [r.id for r in store.list_runs(q="user5@x.test").runs] == [ids[5]]
    assert [r.id for r in store.list_runs(after=ids[5]).runs] == [ids[6]]
    assert store.list_runs(status="failed").runs == []
    assert len(store.list_runs(flow="f", status=["queued"]).runs) == 7


def test_a_retry_keeps_what_ended_for_good_except_error_handlers(store: RunStore) -> None:
    """Copied: records whose resume state says succeeded, skipped or continued, with that state, wherever they
    stand (loops and concurrency make the order meaningless). Not copied: failures, records without state, and
    the on_failure handler's steps, which run again in the new run."""
    run_id = accept(store)
    claim = claimed(store, run_id, "w")
    for r in [StepResult("lines[1].reserve", StepStatus.SUCCEEDED, output=1, state={"status": "succeeded", "v": 1}),
              StepResult("b", StepStatus.FAILED, error_message="x", state={"status": "failed"}),
              StepResult("lines[0].reserve", StepStatus.SUCCEEDED, state={"status": "succeeded", "v": 0}),
              StepResult("route", StepStatus.SKIPPED, state={"status": "skipped"}),
              StepResult("audit", StepStatus.FAILED, state={"status": "continued", "output": {"error": "e"}}),
              StepResult("c", StepStatus.SUCCEEDED, output=3),  # an attempt record without resume state
              StepResult("on_failure.page", StepStatus.SUCCEEDED, state={"status": "succeeded"})]:
        claim.step_finished(r)
    claim.close(RunResult(RunStatus.FAILED))
    child = store.create_linked_run(run_id, "retry", "v1", keep_done=True)
    detail = store.get_run(child)
    assert detail is not None and detail.run.parent_run_id == run_id and detail.run.replay_kind == "retry"
    assert [s.path for s in detail.steps] == ["lines[1].reserve", "lines[0].reserve", "route", "audit"]
    assert [c.id for c in store.get_run(run_id).children] == [child]  # type: ignore[union-attr]
    resumed = claimed(store, child, "w2")
    assert [s.state for s in resumed.steps] == [{"status": "succeeded", "v": 1}, {"status": "succeeded", "v": 0},
                                                {"status": "skipped"}, {"status": "continued", "output": {"error": "e"}}]
    assert store.get_run(store.create_linked_run(run_id, "replay", "v1")).steps == []  # type: ignore[union-attr]


def test_pages_never_read_the_resume_state(store: RunStore) -> None:
    """get_run leaves step_runs.state out of its SELECT (deferred); only claims and retry copies read it."""
    from sqlalchemy import event

    run_id = accept(store)
    claim = claimed(store, run_id, "w")
    claim.step_finished(StepResult("t", StepStatus.SUCCEEDED, output={"shown": 1}, state={"status": "succeeded"}))
    claim.close(RunResult(RunStatus.SUCCEEDED))
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    detail = store.get_run(run_id)
    assert detail is not None and detail.steps[0].output == {"shown": 1} and detail.steps[0].state is None
    steps_sql = [sql for sql in statements if "FROM step_runs" in sql]
    assert steps_sql and not any("step_runs.state" in sql for sql in steps_sql), steps_sql


def test_flow_stats_and_volume(store: RunStore) -> None:
    import time

    from sqlalchemy import update

    from engine.store import RunRow

    since = time.time() - 3600
    f_failed, h_failed = accept(store, key="f0"), accept(store, key="h0", flow="h")
    for run_id in (f_failed, h_failed):
        claimed(store, run_id, "w").close(RunResult(RunStatus.FAILED, error="boom"))
    created = {f_failed: 10, accept(store, key="f1"): 610, accept(store, key="f2"): 620, accept(store, key="f3"): -10,
               accept(store, key="g0", flow="g"): 1300, h_failed: -7200, accept(store, key="x0", flow="x"): 10}
    with store.engine.begin() as c:
        for run_id, offset in created.items():  # seconds after `since`; bucket_s=600 below
            c.execute(update(RunRow).where(RunRow.id == run_id).values(created_at=since + offset))
    stats = store.flow_stats(["f", "g", "h", "idle"], since=since, bucket_s=600)
    assert set(stats) == {"f", "g", "h", "idle"}  # flows not asked for are not counted
    assert stats["f"]["counts"] == {"failed": 1, "queued": 2}  # the run from before `since` is not counted
    assert stats["f"]["volume"] == [1, 2, 0, 0, 0, 0, 0]
    assert stats["f"]["last_failure"].id == f_failed
    assert stats["g"]["counts"] == {"queued": 1} and stats["g"]["volume"] == [0, 0, 1, 0, 0, 0, 0]
    assert stats["g"]["last_failure"] is None
    assert stats["h"]["counts"] == {} and stats["h"]["last_failure"].id == h_failed  # the last failure, however old
    assert stats["idle"] == {"counts": {}, "volume": [0] * 7, "last_failure": None}
    assert store.flow_stats(["g"], since=since, bucket_s=600) == {"g": stats["g"]}  # one flow's page


def test_sqlite_store_syncs_every_commit(tmp_path: Path) -> None:
    """synchronous=FULL: an acknowledged event survives a power cut, not only a process crash (I1)."""
    from sqlalchemy import text

    store = RunStore(f"sqlite:///{tmp_path}/h.db")
    try:
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL (NORMAL is 1)
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        store.dispose()


def _backend_pid(store: RunStore) -> int:
    with store.engine.connect() as c:
        return int(c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def test_postgres_connection_ended_by_the_server_is_replaced_without_an_error(pg_url: str) -> None:
    """A restart or a cut ends pooled connections: the next transaction connects afresh, as with pre-ping."""
    store = RunStore(pg_url)
    store.create_all()
    try:
        first = accept(store, key="before")
        pid = _backend_pid(store)
        with create_engine(pg_url, poolclass=NullPool).connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        time.sleep(0.2)  # the server's termination message reaches the idle socket
        second = accept(store, key="after")  # would raise (and answer 503) on the dead connection
        assert second != first and _backend_pid(store) != pid
    finally:
        store.dispose()


def test_postgres_pooled_connection_skips_the_ping_only_while_busy(pg_url: str, monkeypatch: Any) -> None:
    """Under load no round trip is spent on liveness; a connection idle for a while is pinged first."""
    store = RunStore(pg_url)
    store.create_all()
    pings: list[int] = []
    real_ping = store.engine.dialect.do_ping
    monkeypatch.setattr(store.engine.dialect, "do_ping", lambda conn: pings.append(1) or real_ping(conn))
    try:
        accept(store, key="warm")
        pings.clear()
        for i in range(5):
            accept(store, key=f"busy-{i}")
        assert pings == []
        monkeypatch.setattr("engine.store.connect.PING_AFTER_IDLE_S", 0.05)
        time.sleep(0.1)
        accept(store, key="after-idle")
        assert pings == [1]
    finally:
        store.dispose()


def test_postgres_server_that_never_answers_is_given_up_on(pg_url: str, monkeypatch: Any) -> None:
    """A hung host (TCP accepts, nothing answers) costs a 503 after the connect timeout, not a stuck thread."""
    import socket

    from sqlalchemy.engine import make_url

    monkeypatch.setattr("engine.store.connect.CONNECT_TIMEOUT_S", 2)  # libpq's smallest useful value
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; no startup reply ever comes
    url = make_url(pg_url).set(host="127.0.0.1", port=silent.getsockname()[1])
    store = RunStore(url.render_as_string(hide_password=False))
    outcome: list[BaseException | None] = []

    def ping() -> None:
        try:
            store.ping()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            outcome.append(exc)

    try:
        started = time.monotonic()
        thread = threading.Thread(target=ping, daemon=True)
        thread.start()
        thread.join(15)
        assert outcome, "ping still waiting after 15 s"
        assert isinstance(outcome[0], StoreUnavailable) and "timeout" in str(outcome[0])
        assert time.monotonic() - started < 10
    finally:
        store.dispose()
        silent.close()


def _hold_write_lock(path: str, seconds: float) -> threading.Thread:
    """Another process's writer, as SQLite sees it: a second connection holding the write lock."""
    import sqlite3

    held = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    return thread


def test_sqlite_writer_waits_for_the_write_lock_then_commits(sqlite_url: str) -> None:
    store = RunStore(sqlite_url)
    store.create_all()
    holder = _hold_write_lock(sqlite_url.removeprefix("sqlite:///"), 0.4)
    started = time.monotonic()
    run_id = accept(store, key="waited")
    assert time.monotonic() - started >= 0.3  # it waited for the lock rather than failing
    holder.join()
    assert store.get_run(run_id) is not None
    store.dispose()


def test_sqlite_writer_gives_up_after_the_busy_timeout_with_a_clear_error(sqlite_url: str, monkeypatch: Any) -> None:
    store = RunStore(sqlite_url)
    store.create_all()
    monkeypatch.setattr("engine.store.connect.BUSY_TIMEOUT_S", 0.2)
    holder = _hold_write_lock(sqlite_url.removeprefix("sqlite:///"), 1.0)
    try:
        with pytest.raises(StoreUnavailable, match="database unavailable: database is locked"):
            accept(store, key="refused")
    finally:
        holder.join()
    assert accept(store, key="refused") > 0  # nothing half-written blocks the retry
    store.dispose()
