"""Section 4, runs page: server time of the operator's queries on a store holding N runs (default 1,000,000).

The store is filled once by bench/fill.py and kept for later runs (SQLite file under the cache dir,
PostgreSQL schema ``hlbench_runs_<N>``); ``--refill`` redoes it. Probes go through the Flask app
in-process (``web.create_app`` + test client: routing, queries, templates, JSON; no socket), for
each UI/API route that exists right now, and through RunStore directly for reference:

* ``/runs`` (newest first), ``/runs?status=failed&flow=...``, ``/runs/<id>`` (random ids) and their
  JSON twins when registered; ``/api/runs?q=<exact dedupe key>`` (a key from the middle of the history)
  and ``/api/runs?q=order_id:<value>`` (an indexed field);
* ``RunStore.list_runs`` / ``RunStore.get_run`` with the same arguments.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, log, pct, pg_exec, pg_url_for
from bench.fill import FILL_VERSION, FLOWS, dedupe_key, fill, filled, order_id

CACHE = Path(os.environ.get("HOOKLINE_BENCH_CACHE", "/var/tmp/hookline-bench"))


def store_url(kind: str, runs: int, refill: bool) -> str:
    """A filled store for ``kind``; filled now when missing (or when ``refill``)."""
    if kind == "sqlite":
        CACHE.mkdir(parents=True, exist_ok=True)
        path = CACHE / f"runs-{runs}.db"
        if refill:
            for p in CACHE.glob(f"runs-{runs}.db*"):
                p.unlink()
        url = f"sqlite:///{path}"
        if path.exists() and filled(url) is None:  # an interrupted fill
            for p in CACHE.glob(f"runs-{runs}.db*"):
                p.unlink()
    else:
        schema = f"hlbench_runs_{runs}"
        url = pg_url_for(schema)
        if refill:
            pg_exec(f"drop schema if exists {schema} cascade")
        pg_exec(f"create schema if not exists {schema}")
        try:
            done = filled(url)
        except Exception:  # noqa: BLE001 - a half-made schema: start over
            done = None
        if done is None:
            pg_exec(f"drop schema if exists {schema} cascade")
            pg_exec(f"create schema {schema}")
    info = filled(url)
    if info is not None and info.get("version") != FILL_VERSION:
        log(f"  the cached {kind} store was filled by an older bench/fill.py: refilling")
        _drop(kind, url, runs)
        info = None
    if info is None:
        log(f"  filling {kind} with {runs:,} runs (once; reused by later runs, --refill to redo)")
        info = fill(url, runs)
        log(f"  filled in {info['seconds']:.0f}s")
    else:
        log(f"  reusing the {kind} store with {info['runs']:,} runs (filled in {info['seconds']:.0f}s)")
    from engine.migrate import upgrade

    upgrade(url)  # new migrations since the fill
    return url


def _drop(kind: str, url: str, runs: int) -> None:
    if kind == "sqlite":
        for p in CACHE.glob(f"runs-{runs}.db*"):
            p.unlink()
    else:
        schema = f"hlbench_runs_{runs}"
        pg_exec(f"drop schema if exists {schema} cascade")
        pg_exec(f"create schema {schema}")


def _timed(fn: Any, samples: int, warmup: int = 2, budget_s: float = 15.0) -> dict[str, Any]:
    """Median/p95 of up to ``samples`` calls; a query slower than the budget allows is sampled fewer
    times (at least 3) and says so, so one pathological query cannot eat the run's 25 minutes."""
    t_start = time.perf_counter()
    for i in range(warmup):
        t0 = time.perf_counter()
        fn(-1 - i)
        if time.perf_counter() - t0 > budget_s / 10:
            break  # slow: the warm-up has been paid, more would only cost time
    times: list[float] = []
    for i in range(samples):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
        if len(times) >= 3 and time.perf_counter() - t_start > budget_s:
            break
    return {"median_ms": pct(times, 50), "p95_ms": pct(times, 95), "max_ms": max(times), "samples": len(times),
            "truncated": len(times) < samples}


def probe(kind: str, url: str, runs: int, samples: int) -> dict[str, Any]:
    from engine.store import RunStore

    rng = random.Random(7)
    flow = FLOWS[0][0]
    middle = [rng.randrange(runs // 4, 3 * runs // 4) for _ in range(samples + 4)]
    shopify = list(itertools.islice((i for i in range(runs // 3, runs) if _is_shopify(i)), samples + 4))
    detail_ids = [rng.randrange(1, runs + 1) for _ in range(samples + 4)]
    out: dict[str, Any] = {}

    def measure(name: str, fn: Any) -> None:
        try:
            res = _timed(fn, samples)
        except Exception as exc:  # noqa: BLE001 - a broken page is a finding, not a reason to stop
            out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            log(f"  {kind:8} {name:45} FAILED: {' '.join(str(exc).split())[:160]}")
            return
        out[name] = res
        log(f"  {kind:8} {name:45} median {res['median_ms']:8.1f} ms  p95 {res['p95_ms']:8.1f} ms"
            + (f"  (only {res['samples']} samples: slow)" if res.get("truncated") else ""))

    store = RunStore(url)
    measure("store.list_runs()", lambda i: store.list_runs())
    measure(f"store.list_runs(status=failed, flow={flow})", lambda i: store.list_runs(status="failed", flow=flow))
    measure("store.list_runs(q=<dedupe key>)", lambda i: _expect(store.list_runs(q=dedupe_key(middle[i])).runs))
    measure("store.list_runs(q=order_id:<v>)",
            lambda i: _expect(store.list_runs(q=f"order_id:{order_id(shopify[i])}").runs))
    measure("store.get_run(id)", lambda i: store.get_run(detail_ids[i]))

    app = _app(url)
    client = app.test_client()
    rules = {r.rule for r in app.url_map.iter_rules()}
    routes = [
        ("/runs", lambda i: "/runs"),
        ("/runs?status=failed&flow=", lambda i: f"/runs?status=failed&flow={flow}"),
        ("/runs/<id>", lambda i: f"/runs/{detail_ids[i]}"),
        ("/runs.json", lambda i: "/runs.json"),
        ("/runs/<id>.json", lambda i: f"/runs/{detail_ids[i]}.json"),
        ("/api/runs", lambda i: "/api/runs"),
        ("/api/runs?status=failed&flow=", lambda i: f"/api/runs?status=failed&flow={flow}"),
        ("/api/runs?q=<dedupe key>", lambda i: f"/api/runs?q={dedupe_key(middle[i])}"),
        ("/api/runs?q=order_id:<v>", lambda i: f"/api/runs?q=order_id:{order_id(shopify[i])}"),
        ("/api/runs/<id>", lambda i: f"/api/runs/{detail_ids[i]}"),
        ("/flows", lambda i: "/flows"),  # the landing page: 24 h counts and volume per flow
        ("/flows/<flow_id>", lambda i: f"/flows/{flow}"),
    ]
    missing = []
    for name, path_of in routes:
        rule = name.split("?")[0].replace("<id>", "<int:run_id>")
        if rule not in rules:
            missing.append(name)
            continue

        def get(i: int, path_of: Any = path_of) -> None:
            resp = client.get(path_of(i))
            if resp.status_code != 200:
                raise RuntimeError(f"{path_of(i)} answered {resp.status_code}: {resp.get_data(as_text=True)[:200]}")

        measure(name, get)
    if missing:
        out["routes_missing"] = missing
        log(f"  {kind:8} not registered yet (measured through RunStore instead): {', '.join(missing)}")
    store.dispose()
    return out


def _expect(found: list[Any]) -> None:
    if not found:
        raise RuntimeError("the probe found no run: the fill and the probe disagree")


def _is_shopify(i: int) -> bool:
    from bench.fill import flow_of

    return flow_of(i) == "shopify_order_sync"


def _app(url: str) -> Any:
    """The real app on the filled store; the queue is a no-op (nothing is enqueued by reads)."""
    from engine.catalog import FlowCatalog
    from engine.config import Settings
    from engine.service import Service
    from engine.store import RunStore
    from web import create_app

    flows = CACHE / "flows"
    flows.mkdir(parents=True, exist_ok=True)
    for src in (ROOT / "flows").glob("*.yaml"):  # the flows the filled runs belong to (most of them)
        shutil.copy(src, flows / src.name)
    settings = Settings(database_url=url, flows_dir=str(flows), sandbox=False, secret_key="bench")
    service = Service(settings, RunStore(url), FlowCatalog(flows), enqueue=lambda *_: None)
    return create_app(settings, service=service)


def run(cfg: Any, logdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": cfg.runs_total}
    for kind in cfg.backends:
        url = store_url(kind, cfg.runs_total, cfg.refill)
        out[kind] = probe(kind, url, cfg.runs_total, cfg.page_samples)
    return out
