"""Section 5, scaling on one machine: gunicorn workers 1 -> 2 (ingest) and worker processes 1 -> 2 (end to end).

Run on PostgreSQL + Redis by default (the scale-out set-up; SQLite has one writer at a time). On a
2-core box the load generator, the database and the target share the same cores, so the step from
1 to 2 processes shows how much of a core each process can use, not a multi-machine figure;
docs/benchmarks.md turns these into expected figures for N machines.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from bench.common import Stack, log, summary
from bench.e2e import Target, throughput
from bench.ingest import RequestFiles, measure_max


def commit_ceiling(url: str, seconds: float = 3.0, threads: int = 8) -> dict[str, Any]:
    """Small write transactions per second the database takes from ``threads`` concurrent connections.

    One transaction = one UPDATE of a lease-sized row + COMMIT, like the engine's per-step writes; this
    is the figure the runs/s of many machines divide into (docs/benchmarks.md, "Scaling out").
    """
    import threading
    import time

    import sqlalchemy as sa

    from engine.store import make_engine

    engine = make_engine(url, pool_size=threads, max_overflow=0)
    with engine.begin() as c:
        c.execute(sa.text("create table if not exists bench_commit (id integer primary key, n integer, at float)"))
        c.execute(sa.text("delete from bench_commit"))
        for i in range(threads):
            c.execute(sa.text("insert into bench_commit values (:i, 0, 0)"), {"i": i})
    counts = [0] * threads
    stop = time.time() + seconds

    def work(i: int) -> None:
        with engine.connect() as c:
            while time.time() < stop:
                with c.begin():
                    c.execute(sa.text("update bench_commit set n = n + 1, at = :t where id = :i"),
                              {"t": time.time(), "i": i})
                counts[i] += 1

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    engine.dispose()
    return {"commits_per_s": sum(counts) / seconds, "threads": threads}


def run(cfg: Any, logdir: Path) -> dict[str, Any]:
    kind = cfg.scaling_backend
    out: dict[str, Any] = {"backend": kind}
    from bench.common import make_backend

    for db in cfg.backends:
        b = make_backend(db)
        try:
            out[f"commit_ceiling_{db}"] = commit_ceiling(b.db_url)
            log(f"  {db}: {out[f'commit_ceiling_{db}']['commits_per_s']:.0f} small commits/s from 8 connections")
        finally:
            b.cleanup()
    files = RequestFiles(logdir, n=int(cfg.max_rps * (cfg.duration + cfg.warmup + 1)))
    ingest: dict[str, Any] = {}
    repeats = getattr(cfg, "scaling_repeats", 2)
    for web in (1, 2):
        rows = [measure_max("engine", kind, cfg, files, logdir, workers=web) for _ in range(repeats)]
        ingest[f"web_workers_{web}"] = summary([r["rps"] for r in rows])
    out["ingest_rps"] = ingest
    stack = Stack(logdir)
    target = Target(stack)
    try:
        e2e: dict[str, Any] = {}
        small = copy.copy(cfg)
        small.e2e_events = getattr(cfg, "scaling_events", 600)
        for workers in (1, 2):
            rows = [throughput("engine", kind, "one", small, logdir, target, workers=workers, web_workers=2)
                    for _ in range(repeats)]
            e2e[f"worker_processes_{workers}"] = summary([r["runs_per_s"] for r in rows])
        out["e2e_one_runs_per_s"] = e2e
    finally:
        stack.close()
    i1, i2 = ingest["web_workers_1"]["median"], ingest["web_workers_2"]["median"]
    w1, w2 = out["e2e_one_runs_per_s"]["worker_processes_1"]["median"], out["e2e_one_runs_per_s"]["worker_processes_2"]["median"]
    out["ingest_gain"] = i2 / i1 if i1 else None
    out["e2e_gain"] = w2 / w1 if w1 else None
    log(f"  scaling on {kind}: ingest x{out['ingest_gain'] or 0:.2f} with 2 web workers, "
        f"end to end x{out['e2e_gain'] or 0:.2f} with 2 worker processes")
    return out
