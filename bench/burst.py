"""Section 3, burst: 10,000 signed events posted as fast as the generator can, then drained by the worker.

Reports the posting time, the time until every run is ``succeeded`` (from the first POST), errors,
lost events (accepted but no run, or no outbound call) and doubled calls, and the peak RSS of each
gunicorn worker and of the worker process (sampled from /proc every 0.2 s). The baseline pipeline
drains the same burst for comparison.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import RssSampler, count_statuses, gunicorn_worker_peaks, log, measurement
from bench.e2e import FLOWS, Target, running_target, start_system
from bench.loadgen import describe, run_python_load
from tests.support import wait_for

MB = 1024 * 1024


def one(system: str, kind: str, cfg: Any, logdir: Path, target: Target) -> dict[str, Any]:
    slug, last_path = FLOWS["one"]
    n = cfg.burst_events
    table = "runs" if system == "engine" else "bench_pipeline_events"
    with measurement(kind, logdir) as (backend, stack):
        port = start_system(system, backend, stack, target)
        target.reset()
        web = next(p for p in stack.procs if p.name.endswith("-web"))
        workers = [p for p in stack.procs if "worker" in p.name]
        sampler = RssSampler({"web": web.pid, **{p.name: p.pid for p in workers}})
        sampler.start()
        t0 = time.time()
        rows = run_python_load(f"http://127.0.0.1:{port}/hooks/{slug}", rate=None, duration=None, count=n,
                               prefix="burst", logdir=logdir, processes=2, connections=8)
        posted = time.time() - t0
        post = describe(rows)
        log(f"  {system:8} {kind:8} posted {n} in {posted:.1f}s ({post['rps']:.0f}/s, codes {post['codes']})")
        accepted = post["codes"].get("202", 0)

        def drained() -> bool:
            c = count_statuses(backend.db_url, table)
            return sum(c.values()) >= accepted and all(k in ("succeeded", "failed", "filtered") for k in c)

        error = None
        try:
            # at least 10 runs/s; slower than that is a failure worth reporting, not waiting for
            wait_for(drained, timeout=max(cfg.burst_timeout, n / 10), interval=0.5, what="all runs terminal")
        except AssertionError as exc:  # wait_for timed out
            error = str(exc)
        t_done = time.time()
        peaks = sampler.stop()
        final = count_statuses(backend.db_url, table)
        arrivals = [a for a in target.arrivals() if a[1] == last_path]
        tags = [a[2] for a in arrivals]
        distinct = len(set(tags))
        last_call = max((a[0] for a in arrivals), default=t_done)
        res = {
            "events": n, "post_s": posted, "post_rps": post["rps"], "codes": post["codes"],
            "drain_s": (last_call - t0) if not error else None, "statuses": final,
            "outbound_calls": len(tags), "distinct_outbound": distinct, "doubled_calls": len(tags) - distinct,
            "lost": accepted - distinct, "error": error,
            "web_worker_peak_rss_mb": max(gunicorn_worker_peaks(peaks["web"], web.pid), default=0) / MB,
            "web_master_peak_rss_mb": peaks["web"].get(web.pid, 0) / MB,
            "worker_peak_rss_mb": max((max(peaks[p.name].values(), default=0) for p in workers), default=0) / MB,
        }
        res["ok"] = (not error and post["codes"] == {"202": n} and final.get("succeeded", 0) == n
                     and distinct == n)
        log(f"  {system:8} {kind:8} all succeeded after {res['drain_s'] or float('nan'):.1f}s: {final}; "
            f"calls {len(tags)} (distinct {distinct}); peak RSS web {res['web_worker_peak_rss_mb']:.0f} MB, "
            f"worker {res['worker_peak_rss_mb']:.0f} MB")
        return res


def run(cfg: Any, logdir: Path) -> dict[str, Any]:
    with running_target(logdir) as target:
        out: dict[str, Any] = {"events": cfg.burst_events}
        for kind in cfg.burst_backends:
            out[kind] = {system: one(system, kind, cfg, logdir, target) for system in ("engine", "baseline")}
        return out
