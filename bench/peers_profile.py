"""``python -m bench.peers_profile``: where the CPU goes under the peers' load, per layer, per webhook and per run.

Starts one Hookline set-up of the peers section (default `web --workers 2` + `worker` on SQLite)
against mock_server.js, drives it with the peers' wrk load for ``--seconds``, and meanwhile records
every Hookline process twice with ``py-spy record --nonblocking``: all active threads (where the wall
time goes) and ``--gil`` (the thread holding the GIL: Python's CPU), and its CPU time with psutil.
Each sample goes to the innermost frame that belongs to a layer (HTTP server, Flask, verification,
SQL, queue, metrics, logging, httpx, JSON, flow steps, ...), except samples whose innermost frame
waits (the SQLite lock's retry sleep, a commit's disk sync, an outbound call's answer: py-spy's idle
filter keeps those), shown as waits. A layer's CPU per accepted webhook (web processes) or per
completed run (worker) is its GIL-held samples / rate over the count; what psutil counts beyond that
ran outside the GIL (SQLite's and psycopg's C code, syscalls). Not part of ``make bench``: the
figures behind "Where the time goes (profile)" in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import log, measurement
from bench.peers import BACKEND_OF, Sampler, get_json, mock_reset, wrk_post1k
from bench.peers_setup import start_hookline, start_mock

# (layer, file-path fragments); the first layer found walking a stack from its innermost frame wins
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("logging/", "engine/logs.py")),
    ("metrics", ("prometheus_client/", "engine/metrics.py")),
    ("JSON codec", ("json/", "orjson")),
    ("verification", ("engine/presets/", "hmac.py")),
    ("httpx (outbound calls)", ("httpx/", "httpcore/", "h11/", "anyio/", "ssl.py")),
    ("SQL (SQLAlchemy, driver, store)", ("sqlalchemy/", "sqlite3/", "psycopg/", "psycopg_pool/", "engine/store.py")),
    ("queue (Huey, Redis)", ("huey/", "redis/", "engine/app/tasks.py")),
    ("flow steps (runner, templating, steps)", ("engine/runner.py", "engine/steps/", "engine/templating.py",
                                                "jinja2/", "jsonpath", "engine/envrefs.py", "engine/model.py")),
    ("engine service (execute_run, leases)", ("engine/service.py", "engine/destinations.py")),
    ("Hookline web code (hooks, auth)", ("(web/",)),
    ("Flask / Werkzeug", ("flask/", "werkzeug/wrappers", "werkzeug/routing", "werkzeug/datastructures",
                          "werkzeug/wsgi", "werkzeug/local", "werkzeug/http", "werkzeug/sansio", "werkzeug/test",
                          "werkzeug/utils", "werkzeug/urls")),
    ("HTTP server (gunicorn / waitress)", ("gunicorn/", "waitress/", "werkzeug/serving.py", "socketserver.py",
                                                   "http/server.py", "selectors.py", "socket.py")),
)
OTHER = "other (threads, stdlib, interpreter)"
WAIT = "(waiting) "


def _sleep_frame() -> str:
    """``begin_immediate (engine/store.py:N)`` for the line of its retry sleep (py-spy counts a sleep as active)."""
    import inspect

    from engine import store

    lines, first = inspect.getsourcelines(store.begin_immediate)
    n = next((first + i for i, line in enumerate(lines) if "time.sleep" in line), -1)
    return f"begin_immediate (engine/store.py:{n})"


# innermost frames that wait rather than compute, though py-spy's idle filter keeps them
WAITS: tuple[tuple[str, str], ...] = (
    (_sleep_frame(), "SQLite write lock: retry sleeps"),
    ("do_commit (sqlalchemy/", "commit: WAL sync to disk (GIL released)"),
    ("SyncStream.read (httpcore/", "outbound call: the answer"),
    ("select (selectors.py", "idle connections (select)"),
    ("Condition.wait (threading.py", "idle threads"),
    ("_worker (concurrent/futures/thread.py", "idle threads"),
)


def layer_of(stack: str) -> str:
    frames = stack.split(";")
    for fragment, name in WAITS:
        if fragment in frames[-1]:
            return WAIT + name
    for frame in reversed(frames):
        for name, fragments in LAYERS:
            if any(f in frame for f in fragments):
                return name
    return OTHER


def layers(raw: Path) -> Counter[str]:
    """Samples per layer from py-spy's collapsed (``--format raw``) output."""
    out: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            out[layer_of(stack)] += int(count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", default="web-sqlite", choices=sorted(BACKEND_OF))
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(args.out or tempfile.mkdtemp(prefix="hookline-peers-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    import psutil

    with measurement(BACKEND_OF[args.setup], out) as (backend, stack):
        mock = start_mock(stack)
        procs, url = start_hookline(args.setup, backend, stack, mock)
        wrk_post1k(url, 2.0, args.connections)  # warm-up
        time.sleep(3)  # let the warm-up drain
        roles: dict[str, tuple[str, int]] = {}
        for p in procs:
            kids = psutil.Process(p.pid).children()
            if p.name == "engine-web":
                roles.update({f"web{i}": ("web", k.pid) for i, k in enumerate(kids)})
                roles["gunicorn-master"] = ("master", p.pid)
            else:
                roles[p.name] = ("worker" if "worker" in p.name else "serve", p.pid)
        sampler = Sampler({n: pid for n, (_, pid) in roles.items()})
        sampler.start()
        spies = [subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                                   "--rate", str(args.rate), "--format", "raw", "--nonblocking", *flag,
                                   "--output", str(out / f"{n}{suffix}.txt")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for n, (role, pid) in roles.items() if role != "master"
                 for flag, suffix in (([], ""), (["--gil"], "-gil"))]
        mock_reset(mock)
        res = wrk_post1k(url, args.seconds, args.connections)
        completed = get_json(f"{mock}/__count")["hits"]
        sampler.stop()
        for spy_proc in spies:
            spy_proc.wait(60)
    cpu = {n: sampler.cpu[pid] - sampler.cpu0[pid] for n, (_, pid) in roles.items() if pid in sampler.cpu}
    report = {"setup": args.setup, "seconds": args.seconds, "accepted": res["acked"], "completed": completed,
              "acked_rps": res["acked_rps"], "cpu_s": cpu, "layers": {}}
    groups = {"web": [n for n, (r, _) in roles.items() if r == "web"],
              "worker": [n for n, (r, _) in roles.items() if r == "worker"],
              "serve": [n for n, (r, _) in roles.items() if r == "serve"]}
    lines = [f"{args.setup}: {res['acked']} webhooks accepted ({res['acked_rps']:.0f}/s), {completed} runs completed in "
             f"{args.seconds:.0f} s; CPU s {json.dumps({k: round(v, 2) for k, v in cpu.items()})}"]
    for group, names in groups.items():
        if not names or not all((out / f"{n}-gil.txt").exists() for n in names):
            continue
        wall: Counter[str] = Counter()
        gil: Counter[str] = Counter()
        for n in names:
            wall += layers(out / f"{n}.txt")
            gil += layers(out / f"{n}-gil.txt")
        per, unit = (completed, "run") if group == "worker" else (res["acked"], "webhook")
        cpu_s = sum(cpu[n] for n in names)
        gil_s = sum(gil.values()) / args.rate
        ms = 1000 / max(1, per)
        report["layers"][group] = {"unit": unit, "count": per, "cpu_s": cpu_s, "gil_s": gil_s,
                                   "wall_samples": dict(wall), "gil_samples": dict(gil)}
        lines += ["", f"{group} ({len(names)} process(es)): {cpu_s * ms:.2f} ms CPU per {unit} (psutil {cpu_s:.1f} s "
                  f"for {per} {unit}s; {gil_s:.1f} s of it with the GIL held)"
                  + (": the worker runs behind ingest, its runs are not done in the window" if group == "serve" else ""),
                  f"| layer | share of active thread time (py-spy) | ms CPU per {unit}, GIL held (py-spy --gil) |",
                  "|---|---|---|"]
        wall_total = sum(wall.values())
        for name in sorted(set(wall) | set(gil), key=lambda k: -(gil[k] or 0) - wall[k] / 1e6):
            cpu_cell = f"{gil[name] / args.rate * ms:.2f}" if gil[name] else "-"
            lines.append(f"| {name} | {wall[name] / max(1, wall_total):.1%} | {cpu_cell} |")
        lines.append(f"| outside the GIL (SQLite and psycopg C code, syscalls: psutil CPU minus GIL-held) | - | "
                     f"{max(0.0, cpu_s - gil_s) * ms:.2f} |")
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps(report, indent=1) + "\n")
    print(text)
    log(f"profiles in {out} (collapsed stacks per process: <name>.txt)")


if __name__ == "__main__":
    main()
