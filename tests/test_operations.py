"""Operations: retention on a database filled with aged runs, size caps, search fields, /metrics under
gunicorn with two workers (read with Prometheus' own text parser), structured JSON logs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.model import RunResult, RunStatus, StepResult, StepStatus
from engine.store import RunStore
from tests.support import Stack, Target, make_stack, wait_for

DAY = 86400.0


def fill(store: RunStore, n: int, *, age_days: float, status: RunStatus, body_kb: int = 4) -> list[int]:
    """Runs that finished ``age_days`` ago, each with a step row and a body of body_kb KiB."""
    now = time.time() - age_days * DAY
    ids = []
    for i in range(n):
        run_id = store.accept(flow_id="f", version="v1", source="steps: []", path="f.yaml", method="POST", query="",
                              headers=[], body=os.urandom(body_kb * 512).hex().encode(), content_type="",
                              dedupe_key=None, now=now).run_id
        claim = store.claim(run_id, "w", lease_s=9e9, now=now)
        assert claim is not None
        claim.step_finished(StepResult("s", StepStatus.SUCCEEDED, output={"i": i}))
        claim.close(RunResult(status), now=now)
        ids.append(run_id)
    return ids


def test_retention_prunes_aged_runs_and_the_sqlite_file_shrinks(make_service: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/aged.db"
    svc, _ = make_service({}, url, retention_succeeded=14, retention_failed=90)
    old_ok = fill(svc.store, 300, age_days=20, status=RunStatus.SUCCEEDED)
    fill(svc.store, 50, age_days=20, status=RunStatus.FILTERED)
    recent_failed = fill(svc.store, 40, age_days=30, status=RunStatus.FAILED)
    old_failed = fill(svc.store, 40, age_days=100, status=RunStatus.FAILED)
    fresh = fill(svc.store, 30, age_days=1, status=RunStatus.SUCCEEDED)
    svc.store.reclaim_space()  # checkpoint, so the size compared is all in the main file
    size_before = (tmp_path / "aged.db").stat().st_size
    seen: list[int] = []
    assert svc.prune(progress=seen.append) == 300 + 50 + 40
    assert seen == sorted(seen) and seen[-1] == 390  # progress in batches
    remaining = {r.id for r in svc.store.list_runs(limit=500).runs}
    assert remaining == set(recent_failed) | set(fresh)
    assert not remaining & (set(old_ok) | set(old_failed))
    assert svc.store.get_run(old_ok[0]) is None
    size_after = (tmp_path / "aged.db").stat().st_size
    print(f"SQLite file {size_before / 1e6:.2f} MB -> {size_after / 1e6:.2f} MB after pruning 390 of 460 runs")
    assert size_after < size_before * 0.5


def test_retention_on_postgres(make_service: Any, pg_url: str) -> None:
    svc, _ = make_service({}, pg_url)
    fill(svc.store, 20, age_days=20, status=RunStatus.SUCCEEDED, body_kb=1)
    keep = fill(svc.store, 5, age_days=2, status=RunStatus.SUCCEEDED, body_kb=1)
    assert svc.prune() == 20
    assert {r.id for r in svc.store.list_runs().runs} == set(keep)


CAPPED = """
id: big
trigger:
  index: {order_id: $.order.id, email: $.order.email}
steps:
  - id: blow_up
    transform: {items: "{{ event.order['items'] }}"}
"""


def test_stored_outputs_are_capped_but_the_raw_event_is_kept_whole(make_service: Any, sqlite_url: str) -> None:
    svc, queue = make_service({"big": CAPPED}, sqlite_url, max_stored_body=2048)
    body = {"order": {"id": 4711, "email": "a@b.test", "items": ["x" * 100] * 200}}
    raw = json.dumps(body).encode()
    accepted = svc.accept_event(svc.catalog.get("big"), method="POST", query_string="", headers=[], body=raw,
                                content_type="application/json", parsed=body)
    svc.execute_run(queue.pop()[0])
    detail = svc.store.get_run(accepted.run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    output = detail.steps[0].output
    assert output["_truncated"] is True and output["bytes"] > 20_000 and len(json.dumps(output)) < 2600
    assert detail.event.body == raw  # never cut
    assert detail.index == {"order_id": "4711", "email": "a@b.test"}
    assert [r.id for r in svc.store.list_runs(q="order_id:4711").runs] == [accepted.run_id]
    assert svc.store.list_runs(q="order_id:4712").runs == []


FLOW = """
id: pay
steps:
  - id: shape
    transform: {{n: $.n}}
  - id: call
    http:
      url: {url}/x
      json: {{n: "{{{{ steps.shape.n }}}}"}}
"""


@pytest.fixture
def metered(request: pytest.FixtureRequest, tmp_path: Path, target: Target) -> Iterator[Stack]:
    request.param = "sqlite"  # type: ignore[attr-defined]
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "HOOKLINE_LOG_FORMAT": "json"}
    yield from make_stack(request, tmp_path, {"pay": FLOW.format(url=target.url)}, env)


def scrape(stack: Stack) -> dict[str, float]:
    """Samples by 'name{label=value,...}' from /metrics, parsed by prometheus_client's parser."""
    text = httpx.get(f"{stack.url}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def test_metrics_under_gunicorn_with_two_workers_and_json_logs(metered: Stack, target: Target) -> None:
    metered.start_web(workers=2)
    metered.start("worker", "worker", "--workers", "2")
    ids = [metered.post({"n": i}).json()["run_id"] for i in range(20)]
    metered.post({"n": 0}, flow="nope")
    store = RunStore(metered.db_url)
    wait_for(lambda: all(store.get_run_record(i).status is RunStatus.SUCCEEDED for i in ids), timeout=40,
             what="runs to succeed")

    def finished() -> dict[str, float] | None:
        samples = scrape(metered)
        return samples if samples.get("hookline_runs_finished_total{flow=pay,status=succeeded}") == 20 else None

    samples = wait_for(finished, timeout=20, what="metrics to show 20 finished runs")
    assert samples["hookline_webhooks_received_total{flow=pay}"] == 20  # summed over both gunicorn workers
    assert samples["hookline_webhooks_rejected_total{flow=unknown,reason=unknown_flow}"] == 1
    assert samples["hookline_step_duration_seconds_count{flow=pay,status=succeeded,type=http}"] == 20
    assert samples["hookline_outbound_duration_seconds_count{host=127.0.0.1,status=2xx}"] == 20
    assert samples["hookline_queue_depth{}"] == 0
    assert samples["hookline_runs_unfinished{status=queued}"] == 0
    # one JSON object per line; step and run lines carry the run id
    lines = [json.loads(line) for line in (metered.tmp / "worker.log").read_text().splitlines()
             if line.startswith("{")]
    run_lines = [entry for entry in lines if entry.get("run_id") == ids[0]]
    assert {entry["msg"].split(" ")[0] for entry in run_lines} >= {"step", "run"}
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in lines)


@pytest.mark.parametrize("redis, database, loaded", [
    ("", "sqlite:///{tmp}/h.db", []),
    ("redis://127.0.0.1:6379/15", "sqlite:///{tmp}/h.db", ["redis"]),
    ("", "postgresql+psycopg://postgres@127.0.0.1/test", ["psycopg"]),
])
def test_a_web_process_loads_only_the_drivers_its_settings_use(tmp_path: Path, redis: str, database: str,
                                                              loaded: list[str]) -> None:
    """huey imports redis-py and psycopg whenever installed (~15 MB per process): the gunicorn entry point
    keeps out the ones a deployment does not use, and its queue file on SQLite does not fsync per message."""
    import subprocess
    import sys

    from tests.support import ROOT

    env = {**os.environ, "HOOKLINE_REDIS_URL": redis, "HOOKLINE_DATABASE_URL": database.format(tmp=tmp_path),
           "HOOKLINE_FLOWS_DIR": str(tmp_path)}
    probe = ("import sys, engine.app.wsgi; from engine.app import tasks; "
             "print(sorted(m for m in ('redis', 'psycopg') if sys.modules.get(m) is not None)); "
             "s = tasks.huey.storage; print(s.conn.execute('PRAGMA synchronous').fetchone()[0] if not redis else '-')"
             .replace("not redis", repr(not redis)))
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    modules, synchronous = out.stdout.strip().splitlines()[-2:]
    assert modules == repr(loaded)
    assert synchronous == ("1" if not redis else "-")  # 1 = NORMAL (Huey's default, FULL, is 2)
