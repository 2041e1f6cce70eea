"""The peers load with the worker SIGKILLed once (``--peers-kill``): every acknowledged run calls out exactly once per key.

`hookline web --workers 2` + `hookline worker` on ``kind`` against bench/keymock.py (it records each
call's Idempotency-Key). A third of the way into the load the worker's process group gets SIGKILL and
a new worker starts, as a supervisor would restart it; the runs the dead worker held are taken over
when their lease expires (``HOOKLINE_LEASE_S``, shortened here to ``peers_kill_lease`` so the drain
stays short). Then, with the store's run ids: lost = stored (acknowledged) runs whose key never
arrived; doubled = calls under a key that belongs to no stored run (a run made twice); unfinished =
runs still not terminal after the drain; re-sent = calls repeated under the same key, which I6 allows after a crash
(a receiver that honours Idempotency-Key applies them once) and which the run reports separately.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy

from bench.common import count_statuses, log, measurement
from bench.peers import Sampler, drain, hookline_done, mock_reset, wrk_post1k
from bench.peers_setup import FLOW_ID, start_hookline, start_mock, start_worker
from engine.runner import idempotency_key

CALL_STEP = "out"  # the http step of hookline_bench_ack.yaml


def run_ids(db_url: str) -> list[int]:
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as c:
            return [int(r[0]) for r in c.execute(sqlalchemy.text("select id from runs where flow_id = :f"),
                                                 {"f": FLOW_ID})]
    finally:
        engine.dispose()


def received_keys(mock_url: str) -> list[str]:
    with urllib.request.urlopen(f"{mock_url}/__keys", timeout=30) as r:  # noqa: S310 - loopback
        return r.read().decode().split()


def run_kill(kind: str, cfg: Any, logdir: Path) -> dict[str, Any]:
    try:
        return _run_kill(kind, cfg, logdir)
    except Exception as exc:  # noqa: BLE001 - reported in the table, the other figures stay
        log(f"  kill {kind}: {type(exc).__name__}: {exc}")
        return {"backend": kind, "error": f"{type(exc).__name__}: {exc}"}


def _run_kill(kind: str, cfg: Any, logdir: Path) -> dict[str, Any]:
    lease = {"HOOKLINE_LEASE_S": str(cfg.peers_kill_lease), "HOOKLINE_REAPER_INTERVAL_S": "1"}
    with measurement(kind, logdir) as (backend, stack):
        mock = start_mock(stack, js=False)
        procs, url = start_hookline("web-sqlite", backend, stack, mock, **lease)
        mock_reset(mock)
        sampler = Sampler({p.name: p.pid for p in procs})
        sampler.start()
        t0 = time.time()
        at = cfg.peers_duration / 3
        killed: dict[str, float] = {}

        def kill() -> None:
            victim = procs[1]
            os.killpg(victim.pid, signal.SIGKILL)
            victim.popen.wait(10)
            killed["at"] = time.time() - t0
            new = start_worker(stack, backend, mock, **lease)
            sampler.roots[new.name] = new.pid

        timer = threading.Timer(at, kill)
        timer.start()
        res = wrk_post1k(url, cfg.peers_duration, cfg.peers_connections)
        timer.join()
        d = drain(mock, t0, hookline_done(backend), timeout=cfg.peers_drain_timeout + cfg.peers_kill_lease,
                  quiet_s=2.0, stall_s=cfg.peers_kill_lease + 30)
        sampler.stop()
        ids = run_ids(backend.db_url)
        keys = received_keys(mock)
        expected = {idempotency_key(FLOW_ID, i, CALL_STEP) for i in ids}
        seen = Counter(keys)
        statuses = count_statuses(backend.db_url)
        unfinished = sum(n for s, n in statuses.items() if s not in ("succeeded", "failed", "filtered"))
        out = {"backend": kind, "killed_after_s": killed.get("at", float("nan")), "acked": res["acked"],
               "runs": len(ids), "statuses": statuses, "calls": len(keys), "distinct_keys": len(seen),
               "lost": len(expected - set(seen)) + max(0, res["acked"] - len(ids)),
               "doubled": len(set(seen) - expected), "unfinished": unfinished,
               "resent": sum(n - 1 for n in seen.values() if n > 1), "drain_s": d["drain_s"], "drained": d["drained"],
               "lease_s": cfg.peers_kill_lease, "wrk": res["command"]}
        log(f"  kill {kind}: killed at {out['killed_after_s']:.1f}s; {out['acked']} acked, {out['runs']} runs "
            f"{statuses}; {out['calls']} calls, {out['distinct_keys']} keys: lost {out['lost']}, doubled "
            f"{out['doubled']}, re-sent {out['resent']}; drained after {d['drain_s']:.1f}s")
        return out
