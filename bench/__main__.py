"""``python -m bench [--quick] [--sections ingest,e2e,...]``: run the benchmarks, print a table, write JSON.

Every knob has a flag and a ``HOOKLINE_BENCH_<NAME>`` environment variable (flag wins). Results go
to ``bench/results/<date>.json`` (``<date>-quick.json`` with --quick, ``<date>-<sections>.json`` for a
subset), process logs and profiles to
a temp dir printed at the start. Each section stops by itself; the whole default run is sized for
about 35 minutes on a 2-core machine (less once the 1M-run stores are filled and cached), ~10 of them
for ``peers`` (Node-RED side by side; ``--with-n8n``, ``--peers-kill``: bench/peers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.common import BENCH, ROOT, backend_available, log
from bench.report import render_table, targets

SECTIONS = ("peers", "micro", "ingest", "e2e", "burst", "runs_page", "scaling")


@dataclass
class Config:
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    backends: list[str] = field(default_factory=lambda: ["sqlite", "postgres"])
    repeats: int = 3
    duration: float = 6.0
    warmup: float = 2.0
    connections: int = 16
    max_rps: int = 4000
    ack_rate: float = 500.0
    e2e_backend: str = "sqlite"
    e2e_flows: list[str] = field(default_factory=lambda: ["one", "stripe"])
    e2e_rate: float = 0.0
    e2e_events: int = 400
    e2e_timeout: float = 300.0
    burst_events: int = 10_000
    burst_backends: list[str] = field(default_factory=lambda: ["sqlite"])
    burst_timeout: float = 600.0
    runs_total: int = 1_000_000
    page_samples: int = 40
    refill: bool = False
    scaling_backend: str = "postgres"
    scaling_repeats: int = 2
    scaling_events: int = 600
    micro_iterations: int = 200
    micro_backends: list[str] = field(default_factory=lambda: ["sqlite", "postgres"])
    peers_duration: float = 10.0  # the peers' load: wrk -t1 -c32 -d10s -s ../shared/peers/post1k.lua
    peers_connections: int = 32
    peers_repeats: int = 2  # alternating order (A B C D, D C B A): drift on a shared box hits all alike
    peers_drain_timeout: float = 180.0
    peers_serve_rate: float = 200.0
    peers_kill: bool = False  # also SIGKILL the worker once during the load and count lost / doubled runs
    peers_kill_lease: float = 5.0
    with_n8n: bool = False  # n8n 2.8.4 too (~2.3 GB of npm packages, installed once)
    quick: bool = False

    def apply_quick(self) -> None:
        self.quick = True
        self.repeats, self.duration, self.warmup = 1, 3.0, 1.0
        self.burst_events, self.runs_total, self.page_samples = 1000, 20_000, 8
        self.micro_iterations = 100
        self.e2e_events = 300
        self.scaling_repeats, self.scaling_events = 1, 300
        self.e2e_flows = ["one"]
        self.peers_duration, self.peers_repeats = 5.0, 1


def parse(argv: list[str]) -> Config:
    cfg = Config()
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="every section, briefly (smoke test, ~3-5 min)")
    for f in fields(Config):
        if f.name == "quick":
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool) or f.type == "bool":
            p.add_argument(flag, action="store_true", default=None)
        else:
            p.add_argument(flag, default=None, help=f"env HOOKLINE_BENCH_{f.name.upper()}")
    args = p.parse_args(argv)
    if args.quick or os.environ.get("HOOKLINE_BENCH_QUICK", "") not in ("", "0"):
        cfg.apply_quick()
    for f in fields(Config):
        if f.name == "quick":
            continue
        raw = getattr(args, f.name)
        if raw is None:
            raw = os.environ.get(f"HOOKLINE_BENCH_{f.name.upper()}")
        if raw is None:
            continue
        current = getattr(cfg, f.name)
        if isinstance(current, bool):
            value: Any = raw if isinstance(raw, bool) else raw not in ("", "0", "false", "no")
        elif isinstance(current, list):
            value = [x.strip() for x in str(raw).split(",") if x.strip()]
        else:
            value = type(current)(raw)
        setattr(cfg, f.name, value)
    unknown = set(cfg.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return cfg


def _version(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - a missing tool is reported as such
        return "unavailable"


def machine() -> dict[str, Any]:
    import sqlite3

    import psutil

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.processor()),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(),
        "wrk": _version(["wrk", "--version"]) if subprocess.run(["which", "wrk"], capture_output=True).returncode == 0
        else "not installed",
        "git": _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(_version(["git", "-C", str(ROOT), "status", "--porcelain", "engine", "web"]).strip()
                          not in ("", "unavailable")),
    }
    try:
        import sqlalchemy

        from bench.common import PG_BASE

        eng = sqlalchemy.create_engine(PG_BASE)
        with eng.connect() as c:
            info["postgres"] = c.execute(sqlalchemy.text("show server_version")).scalar()
        eng.dispose()
    except Exception as exc:  # noqa: BLE001
        info["postgres"] = f"unavailable ({type(exc).__name__})"
    try:
        import redis

        from bench.common import REDIS_BASE

        info["redis"] = redis.Redis.from_url(REDIS_BASE).info("server")["redis_version"]
    except Exception as exc:  # noqa: BLE001
        info["redis"] = f"unavailable ({type(exc).__name__})"
    for mod in ("flask", "gunicorn", "huey", "sqlalchemy", "httpx", "psycopg"):
        try:
            from importlib.metadata import version

            info[mod] = version(mod)
        except Exception:  # noqa: BLE001
            pass
    return info


class Noise:
    """CPU used by processes that are not ours during a section: other work on the box skews every figure.

    The machine's busy CPU time (/proc/stat) minus ours (this process, its live descendants and the
    children it reaped), so short-lived processes of other people's test runs count too.
    """

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.t0 = time.time()
        self.load0 = os.getloadavg()[0]
        self.busy0, self.ours0 = self._busy(), self._ours()
        self.live0 = self._live()

    def _busy(self) -> float:
        t = self.psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    def _live(self) -> dict[int, float]:
        out = {}
        for p in self.psutil.Process().children(recursive=True):
            try:
                c = p.cpu_times()
                out[p.pid] = c.user + c.system
            except self.psutil.Error:
                pass
        return out

    def _ours(self) -> float:
        c = self.psutil.Process().cpu_times()
        return c.user + c.system + c.children_user + c.children_system

    def end(self) -> dict[str, Any]:
        live = self._live()
        ours = self._ours() - self.ours0 + sum(v - self.live0.get(pid, 0.0) for pid, v in live.items())
        used = max(0.0, self._busy() - self.busy0 - ours)
        wall = max(1e-9, time.time() - self.t0)
        return {"other_cores_busy": round(used / wall, 2), "loadavg_start": round(self.load0, 2),
                "loadavg_end": round(os.getloadavg()[0], 2), "seconds": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    cfg = parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks and atexit: stop our processes
    os.chdir(ROOT)
    logdir = Path(tempfile.mkdtemp(prefix="hookline-bench-"))
    log(f"hookline bench{' (quick)' if cfg.quick else ''}: sections {', '.join(cfg.sections)}; logs in {logdir}")
    for kind in list(cfg.backends):
        why = backend_available(kind)
        if why:
            log(f"skipping {kind}: {why}")
            cfg.backends.remove(kind)
    if "postgres" not in cfg.backends:
        cfg.micro_backends = [b for b in cfg.micro_backends if b != "postgres"]
        cfg.burst_backends = [b for b in cfg.burst_backends if b != "postgres"]
        if cfg.scaling_backend == "postgres":
            cfg.scaling_backend = "sqlite"
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": asdict(cfg),
                               "machine": machine(), "logdir": str(logdir), "sections": {}, "noise": {}}
    t_all = time.time()
    import importlib

    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    label = "" if set(cfg.sections) == set(SECTIONS) else "-" + "+".join(cfg.sections)  # a partial run keeps the full one
    out = out_dir / (time.strftime("%Y-%m-%d") + ("-quick" if cfg.quick else "") + label + ".json")
    partial = out.with_name(out.name + ".tmp")  # ignored by git (.gitignore: bench/results/*.tmp)

    for name in cfg.sections:
        log(f"== {name}")
        noise = Noise()
        t0 = time.time()
        try:
            module = importlib.import_module(f"bench.{name}")
            results["sections"][name] = module.run(cfg, logdir)
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others' figures
            traceback.print_exc()
            results["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        results["noise"][name] = noise.end()
        partial.write_text(json.dumps(results, indent=1, default=str) + "\n")  # an interrupted run keeps its figures
        log(f"   {name} took {time.time() - t0:.0f}s (other processes kept {results['noise'][name]['other_cores_busy']} "
            "cores busy)")
    results["seconds"] = round(time.time() - t_all)
    results["targets"] = targets(results)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    partial.unlink(missing_ok=True)
    print()
    print(render_table(results))
    print(f"\nwrote {out.relative_to(ROOT)} ({results['seconds']}s); logs and profiles in {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
