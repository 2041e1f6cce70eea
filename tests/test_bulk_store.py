"""The bulk job store (engine.store.replay) on SQLite and PostgreSQL: chunks move the progress in the same
transaction that creates the runs, two processes carrying on one job never create a run twice, and a
retry on another version copies only the kept records ``keep`` allows."""

from __future__ import annotations

import threading

from engine.model import RunResult, RunStatus, StepResult, StepStatus
from engine.store import RunStore
from tests.test_store import accept, claimed


def failed_run(store: RunStore, key: str) -> int:
    run_id = accept(store, key=key)
    claim = claimed(store, run_id, "w")
    claim.step_finished(StepResult("a", StepStatus.SUCCEEDED, state={"status": "succeeded", "output": 1}))
    claim.step_finished(StepResult("b", StepStatus.SUCCEEDED, state={"status": "succeeded", "output": 2}))
    claim.step_finished(StepResult("c", StepStatus.FAILED, error_message="x", state={"status": "failed"}))
    claim.close(RunResult(RunStatus.FAILED))
    return run_id


def test_a_job_advances_chunk_by_chunk_and_a_stale_read_creates_nothing(store: RunStore) -> None:
    parents = [failed_run(store, f"k{i}") for i in range(5)]
    store.save_flow_version("f", "v2", "steps: []", "f.yaml")
    job_id = store.create_job("retry", "current", [(p, "v2") for p in parents], skipped={"not failed": 2},
                              query={"flow": "f"})
    job = store.get_job(job_id)
    assert job is not None and (job.total, job.done, job.run_ids, job.finished) == (5, 0, [], False)
    assert job.skipped == {"not failed": 2} and job.query == {"flow": "f"}
    seen: list[tuple[str, str, str]] = []
    first = store.advance_job(job, 2, keep=lambda old, new, path: seen.append((old, new, path)) or path == "a")
    assert first is not None and len(first) == 2
    assert store.advance_job(job, 2) is None, "read before the first chunk: another process moved it"
    job = store.get_job(job_id)
    assert job is not None and job.done == 2 and job.run_ids == first
    assert {s for s in seen} == {("v1", "v2", "a"), ("v1", "v2", "b")}
    child = store.get_run(first[0])
    assert child is not None and child.run.flow_version == "v2" and [s.path for s in child.steps] == ["a"]
    while not job.finished:
        assert store.advance_job(job, 2) is not None
        job = store.get_job(job_id)  # type: ignore[assignment]
        assert job is not None
    assert job.done == 5 and len(set(job.run_ids)) == 5
    assert sorted(r.parent_run_id or 0 for r in store.runs_by_ids(job.run_ids)) == parents
    assert store.with_children(parents + [999]) == set(parents)
    assert store.kept_ran(parents[:1]) == {parents[0]: [("a", "succeeded"), ("b", "succeeded")]}


def test_two_processes_carrying_on_one_job_share_its_chunks(store: RunStore) -> None:
    parents = [accept(store, key=f"k{i}") for i in range(40)]
    job_id = store.create_job("replay", "original", [(p, "v1") for p in parents])
    created: list[int] = []
    lock = threading.Lock()

    def carry_on() -> None:
        while True:
            job = store.get_job(job_id)
            assert job is not None
            if job.finished:
                return
            new_ids = store.advance_job(job, 3)
            with lock:
                created.extend(new_ids or [])

    workers = [threading.Thread(target=carry_on) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    job = store.get_job(job_id)
    assert job is not None and job.done == 40 and sorted(job.run_ids) == sorted(created)
    assert len(set(created)) == 40
    assert sorted(r.parent_run_id or 0 for r in store.runs_by_ids(created)) == parents


def test_a_failed_job_says_where_it_stopped(store: RunStore) -> None:
    job_id = store.create_job("replay", "original", [(999, "v1")])
    store.fail_job(job_id, "stopped after 0 of 1: no run with id 999")
    job = store.get_job(job_id)
    assert job is not None and job.finished and job.error == "stopped after 0 of 1: no run with id 999"


def test_old_jobs_go_when_a_new_one_is_created(store: RunStore) -> None:
    import time

    from engine.store.replay import JOB_DAYS

    old = store.create_job("replay", "original", [], now=time.time() - JOB_DAYS * 86400 - 60)
    recent = store.create_job("replay", "original", [], now=time.time() - 86400)
    store.create_job("replay", "original", [])
    assert store.get_job(old) is None and store.get_job(recent) is not None


def test_a_bulk_retry_submitted_twice_retries_each_run_once(store: RunStore) -> None:
    """Two jobs planned on the same failed runs (a double submit, two operators): the runs the first one
    retried are skipped by the second, counted as followed up, whichever carries on first."""
    parents = [failed_run(store, f"k{i}") for i in range(6)]
    first = store.create_job("retry", "original", [(p, "v1") for p in parents])
    second = store.create_job("retry", "original", [(p, "v1") for p in parents], skipped={"followed": 1})
    job = store.get_job(first)
    assert job is not None
    assert store.advance_job(job, 4, followed="followed")  # the first job retries parents[:4]
    job = store.get_job(second)
    assert job is not None
    made = store.advance_job(job, 5, followed="followed")
    assert made is not None and len(made) == 1  # parents[4]; parents[:4] were retried already
    job = store.get_job(second)
    assert job is not None and (job.done, job.skipped, job.run_ids) == (5, {"followed": 5}, made)
    assert store.advance_job(job, 5, followed="followed") is not None
    job = store.get_job(first)
    assert job is not None and store.advance_job(job, 5, followed="followed") == []
    children = [r.parent_run_id for r in store.runs_by_ids(range(max(parents) + 1, max(parents) + 20))]
    assert sorted(children) == parents, "one retry per failed run"
    for job_id in (first, second):
        done = store.get_job(job_id)
        assert done is not None and done.finished


def test_two_bulk_retries_of_the_same_runs_at_once_retry_each_once(store: RunStore) -> None:
    parents = [failed_run(store, f"k{i}") for i in range(30)]
    jobs = [store.create_job("retry", "original", [(p, "v1") for p in parents]) for _ in range(3)]

    def carry_on(job_id: int) -> None:
        while True:
            job = store.get_job(job_id)
            assert job is not None
            if job.finished:
                return
            store.advance_job(job, 4, followed="followed")

    workers = [threading.Thread(target=carry_on, args=(j,)) for j in jobs]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    created = [i for j in jobs for i in (store.get_job(j).run_ids if store.get_job(j) else [])]
    assert sorted(r.parent_run_id or 0 for r in store.runs_by_ids(created)) == parents
    assert sum(store.get_job(j).skipped.get("followed", 0) for j in jobs) == 60  # type: ignore[union-attr]
