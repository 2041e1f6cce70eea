"""Load generators, always separate processes on 127.0.0.1, always bounded in time or count.

* ``wrk`` (C, closed loop) for maximum throughput: a Lua script replays pre-signed, unique events
  (``bench/wrk_signed.lua``), since every event needs its own id (dedupe) and signature.
* ``python -m bench.loadgen`` (this file's ``main``) for rate-limited open-loop load and bursts:
  threads with keep-alive ``http.client`` connections, events signed at send time with the send
  timestamp inside. Latency is measured from the *scheduled* send time, so a stalled server is
  not hidden by a stalled client (no coordinated omission).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH, PY, ROOT, encode_event, log, pct, spawn, stop

# --------------------------------------------------------------------------- wrk


def ensure_wrk() -> str:
    """wrk from Debian; installed with apt-get when missing (the bench machine is ours, as root)."""
    path = shutil.which("wrk")
    if path:
        return path
    log("wrk not found: apt-get install wrk")
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
    path = shutil.which("wrk")
    if not path:
        raise RuntimeError("wrk is not installed and apt-get could not install it")
    return path


def write_signed_requests(path: Path, n: int, prefix: str, size: int = 1024) -> None:
    """n unique signed events, one per line: ``<Stripe-Signature>\\t<body>`` (signed now: 5 min tolerance).

    Bodies come from one template with the sequence number substituted (same shape and size as
    bench.common.stripe_event), so 100k events take about a second to sign.
    """
    import hashlib
    import hmac

    from bench.common import SECRET, stripe_event

    now = time.time()
    ts = int(now)
    marker = 987654321
    template = json.dumps(stripe_event(marker, now, prefix, size), separators=(",", ":"))
    key = SECRET.encode()
    with open(path, "w") as f:
        for seq in range(n):
            body = template.replace(str(marker), str(seq)).encode()
            sig = hmac.new(key, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
            f.write(f"t={ts},v1={sig}\t{body.decode()}\n")


def run_wrk(url: str, requests_file: Path, duration: float, connections: int, threads: int = 1,
            timeout: float = 10.0) -> dict[str, Any]:
    """Closed-loop maximum throughput; returns req/s, latency percentiles (ms), errors, non-2xx, wraps."""
    wrk = ensure_wrk()
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    env = {**os.environ, "WRK_PATH": parts.path, "WRK_REQUESTS": str(requests_file)}
    args = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, int(round(duration)))}s",
            "--timeout", f"{int(timeout)}s", "-s", str(BENCH / "wrk_signed.lua"), base]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=duration + 120, cwd=ROOT)
    for line in out.stdout.splitlines():
        if line.startswith("JSON "):
            data: dict[str, Any] = json.loads(line[5:])
            data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
            for k in ("p50", "p90", "p99", "max", "mean"):
                data[k + "_ms"] = data.pop(k + "_us") / 1000
            return data
    raise RuntimeError(f"wrk gave no summary (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


def wrk_plain(url: str, duration: float, connections: int, body: str) -> dict[str, Any]:
    """wrk with one fixed POST body (the target's ceiling)."""
    wrk = ensure_wrk()
    env = {**os.environ, "WRK_BODY": body}
    args = [wrk, "-t", "1", "-c", str(connections), "-d", f"{max(1, int(duration))}s", "-s",
            str(BENCH / "wrk_plain.lua"), url]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=duration + 60)
    for line in out.stdout.splitlines():
        if line.startswith("JSON "):
            data: dict[str, Any] = json.loads(line[5:])
            data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
            data["p99_ms"] = data.pop("p99_us") / 1000
            data["p50_ms"] = data.pop("p50_us") / 1000
            return data
    raise RuntimeError(f"wrk gave no summary:\n{out.stdout}\n{out.stderr}")


# --------------------------------------------------------------------------- python open loop


def run_python_load(url: str, *, rate: float | None, duration: float | None, count: int | None, prefix: str,
                    processes: int = 2, connections: int = 8, size: int = 1024, logdir: Path,
                    seq_start: int = 0) -> list[list[float]]:
    """Run ``processes`` generator processes; return [scheduled, sent, done, status] per request.

    With ``rate``, requests are scheduled evenly over ``duration`` (open loop); without, ``count``
    requests are sent as fast as the connections allow (a burst).
    """
    start_at = time.time() + 1.5
    procs = []
    outs = []
    total = count if count is not None else int((rate or 0) * (duration or 0))
    per = [total // processes + (1 if i < total % processes else 0) for i in range(processes)]
    for i in range(processes):
        out = logdir / f"loadgen{i}.json"
        outs.append(out)
        args = [PY, "-m", "bench.loadgen", "--url", url, "--count", str(per[i]), "--prefix", prefix,
                "--seq-start", str(seq_start + sum(per[:i])), "--connections", str(connections), "--size", str(size),
                "--start-at", repr(start_at), "--out", str(out)]
        if rate:
            args += ["--rate", repr(rate / processes)]
            if duration:  # a server that cannot keep up is not waited for beyond 1.5x the planned time
                args += ["--deadline", repr(duration * 1.5 + 2)]
        procs.append(spawn(f"loadgen{i}", args, {}, logdir))
    limit = (duration or 0) + 300 if rate else 900
    deadline = time.monotonic() + limit
    for p in procs:
        try:
            p.popen.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop(p)
    rows: list[list[float]] = []
    for p, out in zip(procs, outs, strict=True):
        if not out.exists():
            raise RuntimeError(f"{p.name} wrote no results:\n{p.tail()}")
        rows.extend(json.loads(out.read_text()))
    return rows


def describe(rows: list[list[float]]) -> dict[str, Any]:
    """req/s and latency (from the scheduled time) of 2xx answers; status -1 = not sent (deadline), 0 = error."""
    sent = [r for r in rows if r[3] >= 0]
    ok = [r for r in sent if 200 <= r[3] < 300]
    lat = [(r[2] - r[0]) * 1000 for r in ok]
    span = (max(r[2] for r in sent) - min(r[0] for r in sent)) if sent else 0.0
    codes: dict[str, int] = {}
    for r in rows:
        codes[str(int(r[3]))] = codes.get(str(int(r[3])), 0) + 1
    return {"requests": len(rows), "ok": len(ok), "unsent": len(rows) - len(sent), "codes": codes,
            "rps": len(ok) / span if span else None, "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90),
            "p99_ms": pct(lat, 99), "max_ms": max(lat, default=None)}


def _worker(url: str, seqs: list[int], schedule: list[float] | None, prefix: str, size: int,
            out: list[list[float]], deadline: float) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn: http.client.HTTPConnection | None = None
    for i, seq in enumerate(seqs):
        sched = schedule[i] if schedule else time.time()
        if time.time() > deadline:  # the server fell this far behind the schedule: stop, count the rest unsent
            out.extend([[schedule[j] if schedule else sched, 0.0, 0.0, -1.0] for j in range(i, len(seqs))])
            return
        wait = sched - time.time()
        if wait > 0:
            time.sleep(wait)
        sent = time.time()
        body, headers = encode_event(seq, prefix, size, sent)
        status = 0
        for _attempt in range(2):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                conn.request("POST", parts.path, body, headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
                break
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
        out.append([sched, sent, time.time(), float(status)])


def main() -> None:
    parser = argparse.ArgumentParser(description="open-loop signed-event load generator (one process)")
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=None, help="requests/s of this process; omitted: as fast as possible")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--seq-start", type=int, default=0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--deadline", type=float, default=0.0, help="stop sending this many seconds after the start")
    a = parser.parse_args()
    seqs = list(range(a.seq_start, a.seq_start + a.count))
    encode_event(0, "warm", a.size)  # imports and first-call costs before the clock starts
    wait = a.start_at - time.time()
    if wait > 0:
        time.sleep(wait)
    t0 = time.time()
    deadline = t0 + a.deadline if a.deadline else float("inf")
    results: list[list[list[float]]] = [[] for _ in range(a.connections)]
    threads = []
    for k in range(a.connections):
        mine = seqs[k :: a.connections]
        sched = [t0 + (j * a.connections + k) / a.rate for j in range(len(mine))] if a.rate else None
        threads.append(threading.Thread(target=_worker, args=(a.url, mine, sched, a.prefix, a.size, results[k], deadline),
                                        daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = [r for part in results for r in part]
    Path(a.out).write_text(json.dumps(rows))
    print(f"sent {len(rows)} in {time.time() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
