"""``python -m bench.peers_profile``: where the CPU goes under the peers' load, per layer, per webhook and per run.

Starts one Hookline set-up of the peers section (default `web --workers 2` + `worker` on SQLite)
against mock_server.js, drives it with the peers' wrk load for ``--seconds``, and meanwhile records
every Hookline process with ``py-spy record --nonblocking`` (on-CPU samples only: idle threads are
left out) and its CPU time with psutil. Each sample is given to the innermost frame that belongs to a
layer (HTTP server, Flask, verification, SQL, queue, metrics, logging, httpx, JSON, flow steps, ...),
except samples whose innermost frame waits (the SQLite lock's retry sleep, a commit's disk sync, an
outbound call's answer: py-spy's idle filter keeps those), which are shown as waits. A layer's CPU per
accepted webhook (web processes) or per completed run (worker) is its share of the computing samples
times the processes' CPU seconds (psutil) over the count. Not part of ``make bench``: the figures
behind "Where the time goes (profile)" in docs/benchmarks.md.
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
    ("verification", ("engine/verify.py", "hmac.py")),
    ("httpx (outbound calls)", ("httpx/", "httpcore/", "h11/", "anyio/", "ssl.py")),
    ("SQL (SQLAlchemy, driver, store)", ("sqlalchemy/", "sqlite3/", "psycopg/", "psycopg_pool/", "engine/store.py")),
    ("queue (Huey, Redis)", ("huey/", "redis/", "engine/tasks.py")),
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
        spies = {n: subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                                      "--rate", str(args.rate), "--format", "raw", "--nonblocking",
                                      "--output", str(out / f"{n}.txt")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for n, (role, pid) in roles.items() if role != "master"}
        mock_reset(mock)
        res = wrk_post1k(url, args.seconds, args.connections)
        completed = get_json(f"{mock}/__count")["hits"]
        sampler.stop()
        for s in spies.values():
            s.wait(60)
    cpu = {n: sampler.cpu[pid] - sampler.cpu0[pid] for n, (_, pid) in roles.items() if pid in sampler.cpu}
    report = {"setup": args.setup, "seconds": args.seconds, "accepted": res["acked"], "completed": completed,
              "acked_rps": res["acked_rps"], "cpu_s": cpu, "layers": {}}
    groups = {"web": [n for n, (r, _) in roles.items() if r == "web"],
              "worker": [n for n, (r, _) in roles.items() if r == "worker"],
              "serve": [n for n, (r, _) in roles.items() if r == "serve"]}
    lines = [f"{args.setup}: {res['acked']} webhooks accepted ({res['acked_rps']:.0f}/s), {completed} runs completed in "
             f"{args.seconds:.0f} s; CPU s {json.dumps({k: round(v, 2) for k, v in cpu.items()})}"]
    for group, names in groups.items():
        files = [out / f"{n}.txt" for n in names if (out / f"{n}.txt").exists()]
        if not files:
            continue
        counts: Counter[str] = Counter()
        for f in files:
            counts += layers(f)
        total = sum(counts.values())
        busy = sum(n for k, n in counts.items() if not k.startswith(WAIT))
        per, unit = (res["acked"], "webhook") if group == "web" else (completed, "run")
        if group == "serve":
            per, unit = completed, "run (ingest included)"
        cpu_s = sum(cpu[n] for n in names)
        cpu_ms = 1000 * cpu_s / max(1, per)
        report["layers"][group] = {"samples": total, "busy_samples": busy, "cpu_ms_per": cpu_ms, "unit": unit,
                                   "counts": dict(counts)}
        lines += ["", f"{group} ({len(names)} process(es)): {cpu_ms:.2f} ms CPU per {unit} (psutil: {cpu_s:.1f} CPU s; "
                  f"py-spy: {busy / args.rate:.1f} s of computing samples, {(total - busy) / args.rate:.1f} s waiting)",
                  f"| layer | share of samples | ms CPU per {unit} |", "|---|---|---|"]
        for name, n in counts.most_common():
            share = f"{cpu_ms * n / busy:.2f}" if not name.startswith(WAIT) else "(not CPU)"
            lines.append(f"| {name} | {n / total:.1%} | {share} |")
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps(report, indent=1) + "\n")
    print(text)
    log(f"profiles in {out} (collapsed stacks per process: <name>.txt)")


if __name__ == "__main__":
    main()
