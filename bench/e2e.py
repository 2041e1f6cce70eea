"""Section 2, end to end: webhook -> worker -> outbound POST(s) to bench/target.py, vs bench/baseline_pipeline.py.

Flows: ``bench_one`` (filter, transform, one POST) and the shipped Stripe example (filter, transform,
two POSTs, the second using the first's answer). Per repetition and system, two phases on fresh stores:

* throughput: ``e2e_events`` events posted as fast as the generator can while the worker runs;
  completed runs/s = events / (last outbound call - first POST). A closed-loop saturating load would
  measure the CPU scheduler instead: on 2 cores the web workers then starve the worker process;
* latency: the Python generator offers a fixed rate (the same for both systems: half the engine's
  median throughput from phase one unless set) and each event's send time (inside the event) is
  matched with the arrival of its last outbound call: p50/p99 "webhook receipt to last call".
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    PY,
    Backend,
    Stack,
    baseline_env,
    engine_env,
    free_port,
    log,
    measurement,
    pct,
    spawn,
    start_engine_workers,
    start_web,
    summary,
    wait_http,
)
from bench.loadgen import run_python_load, wrk_plain

FLOWS = {"one": ("bench_one", "/one"), "stripe": ("stripe_payment_sync", "/acct/invoices")}


class Target:
    """The target process and a cursor over its arrival records."""

    def __init__(self, stack: Stack) -> None:
        self.port = free_port()
        self.proc = stack.add(spawn("target", [PY, "-m", "bench.target", "--port", str(self.port)], {}, stack.logdir))
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(f"{self.url}/_reset", proc=self.proc)

    def _get(self, path: str) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path)
        data = conn.getresponse().read()
        conn.close()
        return data

    def reset(self) -> None:
        self._get("/_reset")

    def arrivals(self) -> list[tuple[float, str, str]]:
        out = []
        for line in self._get("/_arrivals?from=0").decode().splitlines():
            t, path, tag = line.split(" ", 2)
            out.append((float(t), path, tag))
        return out

    def ceiling(self, duration: float) -> dict[str, Any]:
        res = wrk_plain(f"{self.url}/one", duration, 16, '{"external_id":"cus_x_0_0"}')
        self.reset()
        return res


@contextmanager
def running_target(logdir: Path) -> Iterator[Target]:
    """bench/target.py in a process of its own for the duration of the block."""
    with closing(Stack(logdir)) as stack:
        yield Target(stack)


def start_system(system: str, backend: Backend, stack: Stack, target: Target, workers: int = 1,
                 web_workers: int = 2) -> int:
    port = start_web(system, backend, stack, target.url, web_workers, app="bench.baseline_pipeline:create_app()")
    if system == "engine":
        start_engine_workers(stack, engine_env(backend, backend.tmp / "flows", target.url), workers)
    else:
        env = baseline_env(backend, target.url)
        for i in range(workers):
            stack.add(spawn(f"baseline-worker{i}", [PY, "-m", "bench.baseline_pipeline"], env, stack.logdir))
    return port


def throughput(system: str, kind: str, flow: str, cfg: Any, logdir: Path, target: Target, workers: int = 1,
               web_workers: int = 2) -> dict[str, Any]:
    """``cfg.e2e_events`` events posted as fast as 16 connections allow while the workers run; runs/s =
    events / (last outbound call of the last run - first POST): the capacity of the whole pipeline on
    this box, ingest and execution sharing the cores as they do in production."""
    slug, last_path = FLOWS[flow]
    with measurement(kind, logdir) as (backend, stack):
        port = start_system(system, backend, stack, target, workers, web_workers)
        url = f"http://127.0.0.1:{port}/hooks/{slug}"
        run_python_load(url, rate=min(20.0, cfg.e2e_events), duration=1.0, count=None, prefix="warm", logdir=logdir,
                        processes=1, connections=2)
        time.sleep(1.0)
        target.reset()
        t0 = time.time()
        rows = run_python_load(url, rate=None, duration=None, count=cfg.e2e_events, prefix="tput", logdir=logdir,
                               processes=2, connections=8)
        posted = time.time() - t0
        accepted = sum(1 for r in rows if 200 <= r[3] < 300)
        deadline = time.time() + cfg.e2e_timeout
        done: list[tuple[float, str, str]] = []
        while time.time() < deadline:
            done = [a for a in target.arrivals() if a[1] == last_path and a[2].startswith("cus_tput_")]
            if len(done) >= accepted:
                break
            time.sleep(0.25)
        first = min(r[1] for r in rows)
        last = max((t for t, _, _ in done), default=time.time())
        rps = len(done) / (last - first) if done else 0.0
        log(f"  {system:8} {kind:8} {flow:6} workers {workers}/{web_workers}: {rps:7.1f} runs/s "
            f"({len(done)}/{accepted} runs done in {last - first:.1f}s; posting took {posted:.1f}s)")
        return {"runs_per_s": rps, "completed": len(done), "accepted": accepted, "post_s": posted,
                "ingress_rps": accepted / posted if posted else None, "complete": len(done) >= accepted}


def latency(system: str, kind: str, flow: str, cfg: Any, logdir: Path, target: Target, rate: float) -> dict[str, Any]:
    slug, last_path = FLOWS[flow]
    with measurement(kind, logdir) as (backend, stack):
        port = start_system(system, backend, stack, target)
        url = f"http://127.0.0.1:{port}/hooks/{slug}"
        run_python_load(url, rate=min(rate, 20), duration=1.0, count=None, prefix="warm", logdir=logdir, processes=1,
                        connections=2)
        time.sleep(0.5)
        target.reset()
        rows = run_python_load(url, rate=rate, duration=cfg.duration, count=None, prefix="lat", logdir=logdir,
                               processes=2, connections=8)
        sent = len(rows)
        deadline = time.time() + max(10.0, cfg.duration)
        while True:
            done = [a for a in target.arrivals() if a[1] == last_path and a[2].startswith("cus_lat_")]
            if len(done) >= sent or time.time() > deadline:
                break
            time.sleep(0.25)
        lat = [(t - int(tag.rsplit("_", 1)[1]) / 1e6) * 1000 for t, _, tag in done]
        res = {"rate": rate, "sent": sent, "completed": len(done), "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90),
               "p99_ms": pct(lat, 99), "max_ms": max(lat, default=None)}
        log(f"  {system:8} {kind:8} {flow:6} @{rate:.0f}/s: p50 {res['p50_ms']:.0f} ms  p99 {res['p99_ms']:.0f} ms  "
            f"({len(done)}/{sent} completed)")
        return res


def run(cfg: Any, logdir: Path) -> dict[str, Any]:
    with running_target(logdir) as target:
        ceiling = target.ceiling(min(3.0, cfg.duration))
        log(f"  target ceiling: {ceiling['rps']:.0f} req/s (p99 {ceiling['p99_ms']:.1f} ms)")
        out: dict[str, Any] = {"target_ceiling_rps": ceiling["rps"], "backend": cfg.e2e_backend}
        for flow in cfg.e2e_flows:
            tp: dict[str, list[dict[str, Any]]] = {"engine": [], "baseline": []}
            for rep in range(cfg.repeats):
                for system in (("engine", "baseline") if rep % 2 == 0 else ("baseline", "engine")):
                    tp[system].append(throughput(system, cfg.e2e_backend, flow, cfg, logdir, target))
            eng = summary([r["runs_per_s"] for r in tp["engine"]])
            base = summary([r["runs_per_s"] for r in tp["baseline"]])
            rate = cfg.e2e_rate or max(5.0, round((eng["median"] or 10) / 2))
            lat: dict[str, list[dict[str, Any]]] = {"engine": [], "baseline": []}
            for rep in range(cfg.repeats):
                for system in (("engine", "baseline") if rep % 2 == 0 else ("baseline", "engine")):
                    lat[system].append(latency(system, cfg.e2e_backend, flow, cfg, logdir, target, rate))
            out[flow] = {
                "engine": {"runs_per_s": eng, "p50_ms": summary([r["p50_ms"] for r in lat["engine"]]),
                           "p99_ms": summary([r["p99_ms"] for r in lat["engine"]]), "raw": tp["engine"],
                           "latency_raw": lat["engine"]},
                "baseline": {"runs_per_s": base, "p50_ms": summary([r["p50_ms"] for r in lat["baseline"]]),
                             "p99_ms": summary([r["p99_ms"] for r in lat["baseline"]]), "raw": tp["baseline"],
                             "latency_raw": lat["baseline"]},
                "latency_rate": rate,
                "ratio": (eng["median"] / base["median"]) if eng["median"] and base["median"] else None,
            }
        return out
