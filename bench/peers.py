"""Section peers: Hookline side by side with Node-RED (and n8n with --with-n8n) on the flow in ../shared/peers.

Every system gets the same load, ``wrk -t1 -c32 -d10s -s post1k.lua`` (the same 1 KB body each time),
and the same outbound target, mock_server.js. Completed runs/s are counted at the mock (``GET
/__count``) from the start of the load to the last call of the drain; ack p50/p99 are wrk's; peak RSS
is sampled over every process of the system (psutil), with its CPU time. Node-RED answers
``/hooks/sync`` after its call and keeps no history; Hookline stores and syncs every event and
step result (I1-I11) in three set-ups: ``hookline serve``, ``hookline web --workers 2`` + ``hookline
worker`` on SQLite, and the same on PostgreSQL + Redis. Next to them: the stack's durable-ingest
ceiling (bench/baseline_ingest.py under gunicorn sync and gthread; the faster counts) against
Hookline's web alone, same load. ``--peers-kill`` adds runs where the worker is SIGKILLed once
during the load (bench/peers_kill.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    Backend,
    Proc,
    Stack,
    count_statuses,
    free_port,
    gunicorn_args,
    log,
    measurement,
    process_tree,
    spawn,
    wait_http,
)
from bench.loadgen import ensure_wrk
from bench.peers_setup import HOOKLINE_SETUPS, PeerUnavailable, peers_dir, start_hookline, start_mock, start_n8n, start_node_red

MB = 1024 * 1024
BACKEND_OF = {"serve": "sqlite", "web-sqlite": "sqlite", "web-postgres": "postgres"}


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback URLs we started
        return json.loads(r.read())


def mock_reset(mock_url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{mock_url}/__reset", method="POST"), timeout=5).read()  # noqa: S310


def paced_script(directory: Path, rate: float, connections: int) -> Path:
    """post1k.lua plus a ``delay()`` that paces each connection to ``rate`` req/s in all (Debian's wrk has no -R).

    Closed loop per connection: a slow answer delays that connection's next request, so the
    acknowledged rate is reported next to the offered one (a shortfall means the server fell behind).
    """
    path = directory / f"post1k-{rate:.0f}rps.lua"
    gap_ms = 1000.0 * connections / rate
    path.write_text((peers_dir() / "post1k.lua").read_text() + f"\nfunction delay()\n  return {gap_ms:.1f}\nend\n")
    return path


def wrk_post1k(url: str, duration: float, connections: int, script: Path | None = None) -> dict[str, Any]:
    """The peers' load, verbatim; the RESULT line of post1k.lua parsed into numbers."""
    args = [ensure_wrk(), "-t1", f"-c{connections}", f"-d{max(1, int(round(duration)))}s", "--timeout", "10s",
            "-s", str(script or peers_dir() / "post1k.lua"), url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no RESULT line: {out.stdout[-500:]} {out.stderr[-500:]}")
    res: dict[str, Any] = {k: float(v) for k, v in (kv.split("=", 1) for kv in line.split()[1:])}
    res["acked"] = int(res["requests"] - res["non2xx"])
    res["acked_rps"] = res["acked"] / res["secs"] if res["secs"] else 0.0  # wrk's rps counts 4xx/5xx too
    res["command"] = " ".join(args)
    return res


class Sampler(threading.Thread):
    """Peak RSS and the last CPU time of every process in the trees of ``roots`` (psutil, every 0.2 s)."""

    def __init__(self, roots: dict[str, int], interval: float = 0.2) -> None:
        super().__init__(daemon=True, name="peers-sampler")
        self.roots = dict(roots)
        self.interval = interval
        self.peak: dict[int, int] = {}
        self.cpu0: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self.stopped = threading.Event()
        self.sample()

    def sample(self) -> None:
        import psutil

        for pid in list(self.roots.values()):
            for p in process_tree(pid):
                try:
                    rss, t = p.memory_info().rss, p.cpu_times()
                except psutil.Error:
                    continue
                self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)
                self.cpu0.setdefault(p.pid, t.user + t.system)
                self.cpu[p.pid] = t.user + t.system

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        self.sample()

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu[p] - self.cpu0[p] for p in self.cpu)


def drain(mock_url: str, t0: float, done: Callable[[], bool], timeout: float, quiet_s: float = 1.0,
          stall_s: float = 30.0) -> dict[str, Any]:
    """Poll the mock until ``done()`` and no new hit for ``quiet_s``; the time of the last new hit ends the run.

    Gives up after ``timeout`` or when nothing arrives for ``stall_s`` (a stuck system is reported, not waited on).
    """
    hits, last_change = get_json(f"{mock_url}/__count")["hits"], time.time()
    deadline = time.time() + timeout
    finished = False
    while time.time() < deadline:
        time.sleep(0.1)
        now_hits = get_json(f"{mock_url}/__count")["hits"]
        if now_hits != hits:
            hits, last_change = now_hits, time.time()
            continue
        quiet = time.time() - last_change
        if quiet >= quiet_s and done():
            finished = True
            break
        if quiet >= stall_s:
            break
    return {"hits": hits, "last_hit": last_change, "drain_s": last_change - t0, "drained": finished}


def hookline_done(backend: Backend) -> Callable[[], bool]:
    def done() -> bool:
        c = count_statuses(backend.db_url)
        return not any(k in c for k in ("queued", "running", "waiting"))

    return done


def measure(name: str, procs: list[Proc], url: str, mock_url: str, cfg: Any, backend: Backend | None,
            quiet_s: float = 1.0) -> dict[str, Any]:
    """One system under the peers' load: ack figures, completed runs/s at the mock, CPU and peak RSS of its processes.

    The drain ends when the store has no unfinished run (Hookline) and no call arrived for ``quiet_s``.
    """
    wrk_post1k(url, min(2.0, cfg.peers_duration), cfg.peers_connections)  # warm-up (JIT, pools, caches)
    done = hookline_done(backend) if backend is not None else (lambda: True)
    drain(mock_url, time.time(), done, timeout=cfg.peers_drain_timeout, quiet_s=quiet_s)
    mock_reset(mock_url)
    sampler = Sampler({p.name: p.pid for p in procs})
    sampler.start()
    base = sum(count_statuses(backend.db_url).values()) if backend is not None else 0
    from bench.__main__ import Noise

    noise = Noise()
    t0 = time.time()
    res = wrk_post1k(url, cfg.peers_duration, cfg.peers_connections)
    t_load = time.time() - t0
    d = drain(mock_url, t0, done, timeout=cfg.peers_drain_timeout, quiet_s=quiet_s)
    sampler.stop()
    other = noise.end()["other_cores_busy"]
    cpu = sampler.cpu_s
    peaks = list(sampler.peak.values())
    out: dict[str, Any] = {
        "system": name, "acked_rps": res["acked_rps"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
        "acked": res["acked"], "non2xx": int(res["non2xx"]), "sockerr": int(res["sockerr"]), "load_s": t_load,
        "completed": d["hits"], "drain_s": d["drain_s"], "drained": d["drained"],
        "runs_per_s": d["hits"] / d["drain_s"] if d["drain_s"] > 0 else None,
        "cpu_s": cpu, "cpu_ms_per_run": 1000 * cpu / d["hits"] if d["hits"] else None,
        "rss_total_mb": sum(peaks) / MB, "rss_max_mb": max(peaks, default=0) / MB, "processes": len(peaks),
        "other_cores_busy": other, "wrk": res["command"],
    }
    if backend is not None:
        out["runs_stored"] = sum(count_statuses(backend.db_url).values()) - base
    log(f"  {name:13} acked {out['acked_rps']:7.0f}/s  p50 {out['p50_ms']:6.1f}  p99 {out['p99_ms']:6.1f} ms  "
        f"completed {out['runs_per_s'] or 0:7.1f}/s ({d['hits']} in {d['drain_s']:.1f}s{'' if d['drained'] else ', NOT DRAINED'})"
        f"  CPU {out['cpu_ms_per_run'] or 0:.2f} ms/run  RSS {out['rss_total_mb']:.0f} MB / {out['processes']} procs"
        f" (max {out['rss_max_mb']:.0f}); others busy {other} cores")
    return out


def run_peer(peer: str, cfg: Any, logdir: Path) -> dict[str, Any]:
    stack = Stack(logdir)
    try:
        mock = start_mock(stack)
        proc, url = (start_node_red if peer == "node-red" else start_n8n)(stack, mock)
        return measure(peer, [proc], url, mock, cfg, None, quiet_s=1.0 if peer == "node-red" else 5.0)
    except PeerUnavailable as exc:
        log(f"  {peer}: {exc}")
        return {"system": peer, "error": str(exc)}
    finally:
        stack.close()


def run_hookline(setup: str, cfg: Any, logdir: Path) -> dict[str, Any]:
    with measurement(BACKEND_OF[setup], logdir) as (backend, stack):
        mock = start_mock(stack)
        procs, url = start_hookline(setup, backend, stack, mock)
        return measure(setup, procs, url, mock, cfg, backend)


def run_serve_rate(cfg: Any, logdir: Path) -> dict[str, Any]:
    """`hookline serve` at a fixed offered rate (the issue: ack p99 < 100 ms at 200 req/s)."""
    with measurement("sqlite", logdir) as (backend, stack):
        mock = start_mock(stack)
        _, url = start_hookline("serve", backend, stack, mock)
        script = paced_script(logdir, cfg.peers_serve_rate, cfg.peers_connections)
        wrk_post1k(url, min(2.0, cfg.peers_duration), cfg.peers_connections, script)
        res = wrk_post1k(url, cfg.peers_duration, cfg.peers_connections, script)
        log(f"  serve @{cfg.peers_serve_rate:.0f}/s offered: acked {res['acked_rps']:.0f}/s  p50 {res['p50_ms']:.1f}  "
            f"p99 {res['p99_ms']:.1f} ms")
        return {"offered_rps": cfg.peers_serve_rate, "connections": cfg.peers_connections, "acked_rps": res["acked_rps"],
                "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"], "non2xx": int(res["non2xx"]), "wrk": res["command"]}


INGEST_APPS = {"ceiling-sync": ("bench.baseline_ingest:create_app()", 1),
               "ceiling-gthread": ("bench.baseline_ingest:create_app()", 4),
               "flask-noop": ("bench.peers_setup:noop_app()", 4)}


def run_ingest(system: str, kind: str, cfg: Any, logdir: Path) -> dict[str, Any]:
    """Acknowledgement path only (no worker), same load: Hookline's `web`, the ceiling app (sync/gthread) or a no-op."""
    with measurement(kind, logdir) as (backend, stack):
        mock = start_mock(stack)
        if system == "hookline":
            procs, url = start_hookline("web-sqlite", backend, stack, mock)
            procs[1].popen.terminate()  # the acknowledgement path alone, as for the ceiling
            procs[1].popen.wait(15)
            web = procs[0]
        else:
            from bench.common import baseline_env

            port = free_port()
            app, threads = INGEST_APPS[system]
            web = stack.add(spawn(system, gunicorn_args(app, port, threads=threads), baseline_env(backend, mock),
                                  stack.logdir))
            wait_http(f"http://127.0.0.1:{port}/healthz", proc=web)
            url = f"http://127.0.0.1:{port}/hooks/bench_ack"
        wrk_post1k(url, min(2.0, cfg.peers_duration), cfg.peers_connections)
        sampler = Sampler({web.name: web.pid})
        sampler.start()
        res = wrk_post1k(url, cfg.peers_duration, cfg.peers_connections)
        sampler.stop()
        cpu_ms = 1000 * sampler.cpu_s / max(1, res["acked"])
        log(f"  {system:15} {kind:8} acked {res['acked_rps']:7.0f}/s  p50 {res['p50_ms']:6.1f}  p99 {res['p99_ms']:6.1f} ms"
            f"  non-2xx {int(res['non2xx'])}  CPU {cpu_ms:.2f} ms/request")
        return {"system": system, "backend": kind, "acked_rps": res["acked_rps"], "p50_ms": res["p50_ms"],
                "p99_ms": res["p99_ms"], "non2xx": int(res["non2xx"]), "cpu_ms_per_request": cpu_ms,
                "wrk": res["command"]}


def run(cfg: Any, logdir: Path) -> dict[str, Any]:
    peers_dir()
    ensure_wrk()
    out: dict[str, Any] = {"settings": {"duration_s": cfg.peers_duration, "connections": cfg.peers_connections,
                                        "repeats": cfg.peers_repeats, "peers_dir": str(peers_dir())},
                           "uptime_start": os.getloadavg(), "runs": []}
    systems = ["node-red", *(["n8n"] if cfg.with_n8n else []),
               *(s for s in HOOKLINE_SETUPS if BACKEND_OF[s] in cfg.backends)]
    for rep in range(cfg.peers_repeats):
        for name in systems if rep % 2 == 0 else list(reversed(systems)):
            try:
                r = run_peer(name, cfg, logdir) if name in ("node-red", "n8n") else run_hookline(name, cfg, logdir)
            except Exception as exc:  # noqa: BLE001 - one failing system must not lose the others' figures
                log(f"  {name}: {type(exc).__name__}: {exc}")
                r = {"system": name, "error": f"{type(exc).__name__}: {exc}"}
            out["runs"].append(r)
    if "sqlite" in cfg.backends and cfg.peers_serve_rate:
        try:
            out["serve_rate"] = run_serve_rate(cfg, logdir)
        except Exception as exc:  # noqa: BLE001
            out["serve_rate"] = {"error": f"{type(exc).__name__}: {exc}"}
    out["ingest"] = []
    for rep in range(cfg.peers_repeats):
        order = [(kind, system) for kind in cfg.backends
                 for system in ("hookline", "ceiling-sync", "ceiling-gthread", *(["flask-noop"] if kind == "sqlite" else []))]
        for kind, system in order if rep % 2 == 0 else list(reversed(order)):
            try:
                out["ingest"].append(run_ingest(system, kind, cfg, logdir))
            except Exception as exc:  # noqa: BLE001
                log(f"  ingest {system} {kind}: {type(exc).__name__}: {exc}")
                out["ingest"].append({"system": system, "backend": kind, "error": f"{type(exc).__name__}: {exc}"})
    if cfg.peers_kill:
        from bench.peers_kill import run_kill

        out["kill"] = [run_kill(kind, cfg, logdir) for kind in cfg.backends]
    out["uptime_end"] = os.getloadavg()
    from bench.peers_report import peers_table

    out["table"] = peers_table(out)
    print(out["table"], flush=True)
    return out
