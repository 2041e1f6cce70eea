"""Section 1, ingest: POST /hooks/<flow> (verify + dedupe + store + enqueue) vs bench/baseline_ingest.py.

Each repetition starts a fresh store and a fresh gunicorn (same command line for both), warms it up,
then drives it with wrk (closed loop, unique pre-signed 1 KB events) for ``duration`` seconds. The
engine and the baseline alternate within each repetition so drift on the machine hits both alike.
No worker runs: this measures the acknowledgement path only. On SQLite a second phase offers a
fixed rate (500 req/s, open loop, Python generator) and reports the ack latency percentiles.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import gunicorn_args, log, measurement, start_web, summary
from bench.loadgen import describe, run_python_load, run_wrk, write_signed_requests


class RequestFiles:
    """Pre-signed request files, re-signed when older than the Stripe tolerance allows (5 min)."""

    def __init__(self, directory: Path, n: int) -> None:
        self.directory = directory
        self.n = n
        self.made: dict[str, float] = {}

    def get(self, name: str) -> Path:
        path = self.directory / f"requests-{name}.txt"
        if time.time() - self.made.get(name, 0.0) > 200:
            write_signed_requests(path, self.n, name)
            self.made[name] = time.time()
        return path


def measure_max(system: str, kind: str, cfg: Any, files: RequestFiles, logdir: Path, workers: int = 2) -> dict[str, Any]:
    with measurement(kind, logdir) as (backend, stack):
        port = start_web(system, backend, stack, workers=workers)
        url = f"http://127.0.0.1:{port}/hooks/bench_one"
        run_wrk(url, files.get("warmup"), cfg.warmup, cfg.connections)
        res = run_wrk(url, files.get("main"), cfg.duration, cfg.connections)
        if res["wrapped"]:
            log(f"  warning: wrk re-sent events ({res['wrapped']} wraps): raise HOOKLINE_BENCH_MAX_RPS")
        log(f"  {system:8} {kind:8} {res['rps']:8.0f} req/s  p50 {res['p50_ms']:.1f} ms  p99 {res['p99_ms']:.1f} ms"
            f"  non-2xx {res['non2xx']}  errors {sum(res['errors'].values())}")
        return res


def measure_rate(system: str, cfg: Any, logdir: Path, rate: float) -> dict[str, Any]:
    with measurement("sqlite", logdir) as (backend, stack):
        port = start_web(system, backend, stack)
        url = f"http://127.0.0.1:{port}/hooks/bench_one"
        run_python_load(url, rate=rate, duration=min(2.0, cfg.warmup), count=None, prefix="warm", logdir=logdir,
                        processes=1, connections=4)
        rows = run_python_load(url, rate=rate, duration=cfg.duration, count=None, prefix="rate", logdir=logdir,
                               processes=2, connections=12)
        res = describe(rows)
        log(f"  {system:8} sqlite   @{rate:.0f}/s: {res['rps'] or 0:6.0f} req/s  p50 {res['p50_ms']:.1f} ms  "
            f"p99 {res['p99_ms']:.1f} ms  codes {res['codes']}")
        return res


def generator_floor(cfg: Any, logdir: Path) -> dict[str, Any]:
    """The Python generator against bench/target.py at the fixed rate: the latency it adds by itself."""
    from bench.e2e import running_target

    with running_target(logdir) as target:
        rows = run_python_load(f"{target.url}/one", rate=cfg.ack_rate, duration=min(4.0, cfg.duration), count=None,
                               prefix="floor", logdir=logdir, processes=2, connections=12)
        res = describe(rows)
        log(f"  generator floor @{cfg.ack_rate:.0f}/s against the bare target: p50 {res['p50_ms']:.1f} ms, "
            f"p99 {res['p99_ms']:.1f} ms")
        return res


def run(cfg: Any, logdir: Path) -> dict[str, Any]:
    files = RequestFiles(logdir, n=int(cfg.max_rps * (cfg.duration + 1)))
    out: dict[str, Any] = {"settings": {"duration_s": cfg.duration, "connections": cfg.connections,
                                        "repeats": cfg.repeats, "gunicorn": " ".join(gunicorn_args("APP", 0)[2:])}}
    for kind in cfg.backends:
        runs: dict[str, list[dict[str, Any]]] = {"engine": [], "baseline": []}
        for rep in range(cfg.repeats):
            order = ("engine", "baseline") if rep % 2 == 0 else ("baseline", "engine")
            for system in order:
                runs[system].append(measure_max(system, kind, cfg, files, logdir))
        out[kind] = _pair(runs)
    if "sqlite" in cfg.backends and cfg.ack_rate:
        out["generator_floor"] = generator_floor(cfg, logdir)
        runs = {"engine": [], "baseline": []}
        for rep in range(cfg.repeats):
            order = ("engine", "baseline") if rep % 2 == 0 else ("baseline", "engine")
            for system in order:
                runs[system].append(measure_rate(system, cfg, logdir, cfg.ack_rate))
        fixed = _pair(runs)
        fixed["rate"] = cfg.ack_rate
        out["sqlite_fixed_rate"] = fixed
    return out


def _pair(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for system, items in runs.items():
        res[system] = {
            "rps": summary([r["rps"] or 0.0 for r in items]),
            "p50_ms": summary([r["p50_ms"] for r in items]),
            "p99_ms": summary([r["p99_ms"] for r in items]),
            "raw": items,
        }
    e, b = res["engine"]["rps"]["median"], res["baseline"]["rps"]["median"]
    res["ratio"] = e / b if e and b else None
    res["ratios"] = [(x["rps"] or 0) / y["rps"] if y["rps"] else None for x, y in zip(runs["engine"], runs["baseline"],
                                                                                      strict=True)]
    return res

