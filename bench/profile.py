"""``python -m bench.profile``: py-spy on a live engine stack (SQLite) under load; not part of ``make bench``.

Starts `hookline web` + `hookline worker` + bench/target.py, posts events for ``--seconds`` at a
steady rate, and records each gunicorn worker and the worker process with ``py-spy record``
(speedscope JSON and raw collapsed stacks) next to a summary of the heaviest functions (own and
inclusive share of samples) in ``--out`` (default: a temp dir, printed). This is the evidence behind
the optimisation list in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import Stack, engine_env, free_port, log, make_backend, start_engine_web, start_engine_workers, write_flows
from bench.e2e import Target
from bench.loadgen import run_python_load


def summarize(raw: Path, top: int = 25) -> str:
    """Own and inclusive sample shares per frame from py-spy's collapsed (``--format raw``) output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"{raw.name}: {total} samples (idle threads excluded)", "  own:"]
    lines += [f"    {c / total:6.1%}  {f}" for f, c in own.most_common(top)]
    lines += ["  inclusive:"]
    lines += [f"    {c / total:6.1%}  {f}" for f, c in incl.most_common(top * 2) if "threading.py" not in f]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=60.0, help="events/s offered (open loop)")
    parser.add_argument("--flow", default="bench_one")
    parser.add_argument("--backend", default="sqlite")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(args.out or tempfile.mkdtemp(prefix="hookline-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    stack = Stack(out)
    backend = make_backend(args.backend)
    try:
        import psutil

        target = Target(stack)
        flows = backend.tmp / "flows"
        write_flows(flows)
        env = engine_env(backend, flows, target.url)
        port = free_port()
        web = start_engine_web(stack, env, port)
        (worker,) = start_engine_workers(stack, env, 1)
        time.sleep(2)
        pids = {f"web{i}": p.pid for i, p in enumerate(psutil.Process(web.pid).children())}
        pids["worker"] = worker.pid
        spies = []
        for name, pid in pids.items():
            for fmt, ext in (("raw", "txt"), ("speedscope", "json")):
                spies.append(subprocess.Popen(
                    [spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)), "--rate", "200",
                     "--format", fmt, "--output", str(out / f"{name}.{ext}"), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        log(f"py-spy on {pids}; offering {args.rate}/s for {args.seconds:.0f}s")
        run_python_load(f"http://127.0.0.1:{port}/hooks/{args.flow}", rate=args.rate, duration=args.seconds,
                        count=None, prefix="prof", logdir=out, processes=1, connections=8)
        for s in spies:
            s.wait(args.seconds + 60)
        report = "\n\n".join(summarize(out / f"{name}.txt") for name in pids if (out / f"{name}.txt").exists())
        (out / "summary.txt").write_text(report + "\n")
        print(report)
        log(f"profiles in {out} (.json: speedscope format; .txt: collapsed stacks)")
    finally:
        stack.close()
        backend.cleanup()


if __name__ == "__main__":
    main()
