"""Shared plumbing: backends (fresh SQLite dir / PostgreSQL schema + Redis db), processes, events, stats."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
SECRET = "whsec_bench_secret"
PG_BASE = os.environ.get("HOOKLINE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("HOOKLINE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_DB = int(os.environ.get("HOOKLINE_BENCH_REDIS_DB", "14"))  # a spare index: tests use 9-14 by pid, so flushed
WEB_WORKERS = 2  # `hookline web` defaults, used for the engine and the baselines alike
WEB_THREADS = 4
WORKER_THREADS = 4


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- statistics


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median of repeated measurements with their spread (min..max), as the issue asks."""
    vals = [v for v in values if v == v]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": list(values)}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": list(values)}


# --------------------------------------------------------------------------- events


def stripe_event(seq: int, sent: float, prefix: str, size: int = 1024) -> dict[str, Any]:
    """A payment_intent.succeeded event padded to ~``size`` bytes; ``customer`` carries the tag the target reads.

    The tag ``cus_<prefix>_<seq>_<sent µs>`` travels into every outbound body of both bench flows (the
    Stripe example uses it as the CRM ``external_id``; the target echoes it as the contact id, which
    then reaches the invoice), so arrival times can be matched to the send time.
    """
    tag = f"cus_{prefix}_{seq}_{int(sent * 1e6)}"
    ev: dict[str, Any] = {
        "id": f"evt_{prefix}_{seq}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(sent),
        "type": "payment_intent.succeeded",
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": f"req_{seq:014d}", "idempotency_key": str(uuid.UUID(int=seq))},
        "data": {"object": {
            "id": f"pi_{seq:024d}", "object": "payment_intent", "amount": 2000 + seq % 5000, "amount_received": 2000,
            "currency": "eur", "customer": tag, "receipt_email": f"Customer{seq}@Example.com",
            "description": "Bench order", "status": "succeeded", "capture_method": "automatic",
            "payment_method": f"pm_{seq:024d}", "payment_method_types": ["card"],
            "metadata": {"order_id": str(100000 + seq), "channel": "web"},
        }},
    }
    raw = json.dumps(ev, separators=(",", ":"))
    pad = size - len(raw) - len(',"padding":""')
    if pad > 0:
        ev["data"]["object"]["padding"] = "x" * pad
    return ev


def signed(body: bytes, now: float) -> dict[str, str]:
    from engine.presets import VerifyConfig, sign

    headers = sign(VerifyConfig("stripe", (SECRET,), {"tolerance": 300}), body, env={}, now=now)
    headers["Content-Type"] = "application/json"
    return headers


def encode_event(seq: int, prefix: str, size: int = 1024, now: float | None = None) -> tuple[bytes, dict[str, str]]:
    now = time.time() if now is None else now
    body = json.dumps(stripe_event(seq, now, prefix, size), separators=(",", ":")).encode()
    return body, signed(body, now)


# --------------------------------------------------------------------------- flows

ONE_CALL_FLOW = """
id: bench_one
trigger:
  verify: {provider: stripe, secret: "${STRIPE_WEBHOOK_SECRET}"}
  dedupe: $.id
steps:
  - id: succeeded_only
    filter: event.type == "payment_intent.succeeded"
  - id: payment
    transform:
      ref: $.data.object.customer
      email: "{{ event.data.object.receipt_email | lower }}"
      amount: "{{ event.data.object.amount / 100 }}"
      currency: "{{ event.data.object.currency | upper }}"
  - id: notify
    http:
      method: POST
      url: ${TARGET_URL}/one
      json:
        external_id: "{{ steps.payment.ref }}"
        email: "{{ steps.payment.email }}"
        amount: "{{ steps.payment.amount }}"
        currency: "{{ steps.payment.currency }}"
      timeout: 10s
      retry: {max_attempts: 6, backoff: exponential, initial: 2s, max_delay: 10m}
"""


def write_flows(directory: Path) -> None:
    """bench_one (filter, transform, one POST) and the shipped Stripe example flow, unchanged."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench_one.yaml").write_text(ONE_CALL_FLOW)
    shutil.copy(ROOT / "flows" / "stripe_payment_sync.yaml", directory / "stripe_payment_sync.yaml")


# --------------------------------------------------------------------------- backends


@dataclass
class Backend:
    """A fresh, empty store: SQLite + SqliteHuey files in a temp dir, or a PostgreSQL schema + a Redis db."""

    kind: str
    tmp: Path
    db_url: str
    redis_url: str = ""
    queue_path: str = ""
    schema: str = ""

    @property
    def env(self) -> dict[str, str]:
        env = {"HOOKLINE_DATABASE_URL": self.db_url}
        if self.redis_url:
            env["HOOKLINE_REDIS_URL"] = self.redis_url
        if self.queue_path:
            env["HOOKLINE_HUEY_PATH"] = self.queue_path
        return env

    def cleanup(self) -> None:
        if self.schema:
            pg_exec(f"drop schema if exists {self.schema} cascade")
        if self.redis_url:
            _redis_flush(self.redis_url)
        shutil.rmtree(self.tmp, ignore_errors=True)


def pg_exec(sql: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.execute(sqlalchemy.text(sql))
    finally:
        engine.dispose()


def _redis_flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def pg_url_for(schema: str) -> str:
    sep = "&" if "?" in PG_BASE else "?"
    return f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"


def make_backend(kind: str, *, migrate: bool = True) -> Backend:
    tmp = Path(tempfile.mkdtemp(prefix=f"hlbench-{kind}-"))
    if kind == "sqlite":
        b = Backend(kind, tmp, f"sqlite:///{tmp}/hookline.db", queue_path=str(tmp / "queue.db"))
    elif kind == "postgres":
        schema = f"hlbench_{uuid.uuid4().hex[:8]}"
        pg_exec(f"create schema {schema}")
        redis_url = REDIS_BASE.rsplit("/", 1)[0] + f"/{REDIS_DB}"
        _redis_flush(redis_url)
        b = Backend(kind, tmp, pg_url_for(schema), redis_url=redis_url, schema=schema)
    else:
        raise ValueError(kind)
    if migrate:
        from engine.migrate import upgrade

        upgrade(b.db_url)
        create_baseline_tables(b.db_url)
    return b


def create_baseline_tables(url: str) -> None:
    """The baselines' tables, made before their gunicorn workers start (as `hookline db upgrade` is for the engine)."""
    from bench.baseline_ingest import make_db
    from bench.baseline_ingest import metadata as ingest_md
    from bench.baseline_pipeline import metadata as pipeline_md

    db = make_db(url)
    ingest_md.create_all(db)
    pipeline_md.create_all(db)
    db.dispose()


def backend_available(kind: str) -> str | None:
    """None when usable, else why not (the section is then reported as skipped)."""
    if kind == "sqlite":
        return None
    try:
        pg_exec("select 1")
        import redis

        redis.Redis.from_url(REDIS_BASE).ping()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return None


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    logfile: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, n: int = 2000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-n:]
        except OSError:
            return ""


_LIVE: dict[int, Proc] = {}


def spawn(name: str, args: Sequence[str], env: dict[str, str], logdir: Path) -> Proc:
    """Start a process in its own session (so its whole group can be stopped); remembered until stopped."""
    logfile = logdir / f"{name}.log"
    out = open(logfile, "ab")  # noqa: SIM115 - owned by the process
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    popen = subprocess.Popen(list(args), cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
    out.close()
    proc = Proc(name, popen, logfile)
    _LIVE[popen.pid] = proc
    return proc


def stop_all() -> None:
    """Stop every process this run started and has not stopped yet (atexit, SIGTERM, Ctrl-C)."""
    for proc in list(_LIVE.values()):
        stop(proc, timeout=5)


atexit.register(stop_all)


def stop(proc: Proc, timeout: float = 10.0) -> None:
    """SIGTERM the process group we started, SIGKILL it if it lingers."""
    p = proc.popen
    _LIVE.pop(p.pid, None)
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        p.wait(10)


def gunicorn_args(app: str, port: int, workers: int = WEB_WORKERS, threads: int = WEB_THREADS) -> list[str]:
    """The same command line `hookline web` execs (engine/app/processes.py:web), for any WSGI app."""
    return [PY, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads),
            "--worker-class", "gthread" if threads > 1 else "sync", "--access-logfile", "-",
            "--graceful-timeout", "10", app]


def wait_http(url: str, timeout: float = 30.0, proc: Proc | None = None) -> None:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
            conn.request("GET", parts.path or "/")
            status = conn.getresponse().status
            conn.close()
            if status < 500:
                return
            last = f"status {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up after {timeout}s ({last})" + (f"\n{proc.tail()}" if proc else ""))


@dataclass
class Stack:
    """Processes of one measurement; ``close()`` stops them all (in reverse order)."""

    logdir: Path
    procs: list[Proc] = field(default_factory=list)

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for p in reversed(self.procs):
            stop(p)
        self.procs.clear()


@contextmanager
def measurement(kind: str, logdir: Path) -> Iterator[tuple[Backend, Stack]]:
    """A fresh backend and a Stack for the processes on it; afterwards the processes stop, then the store goes."""
    backend = make_backend(kind)
    stack = Stack(logdir)
    try:
        yield backend, stack
    finally:
        stack.close()
        backend.cleanup()


def engine_env(backend: Backend, flows: Path, target_url: str, **extra: str) -> dict[str, str]:
    return {**backend.env, "HOOKLINE_FLOWS_DIR": str(flows), "STRIPE_WEBHOOK_SECRET": SECRET,
            "TARGET_URL": target_url, "CRM_URL": f"{target_url}/crm", "ACCOUNTING_URL": f"{target_url}/acct",
            "HOOKLINE_SANDBOX": "0", "HOOKLINE_WORKER_THREADS": str(WORKER_THREADS), **extra}


def start_engine_web(stack: Stack, env: dict[str, str], port: int, workers: int = WEB_WORKERS) -> Proc:
    proc = stack.add(spawn("engine-web", [PY, "-m", "engine.app.cli", "web", "--port", str(port), "--workers",
                                          str(workers), "--threads", str(WEB_THREADS)], env, stack.logdir))
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
    return proc


def start_engine_workers(stack: Stack, env: dict[str, str], processes: int = 1) -> list[Proc]:
    return [stack.add(spawn(f"engine-worker{i}", [PY, "-m", "engine.app.cli", "worker", "--workers", str(WORKER_THREADS)],
                            env, stack.logdir)) for i in range(processes)]


def baseline_env(backend: Backend, target_url: str) -> dict[str, str]:
    return {"BENCH_DB_URL": backend.db_url, "BENCH_REDIS_URL": backend.redis_url,
            "BENCH_QUEUE_PATH": backend.queue_path or str(backend.tmp / "baseline-queue.db"),
            "BENCH_SECRET": SECRET, "TARGET_URL": target_url}


def start_web(system: str, backend: Backend, stack: Stack, target_url: str = "http://127.0.0.1:9", workers: int = 2,
              app: str = "bench.baseline_ingest:create_app()") -> int:
    """Start the engine's `hookline web` or a baseline app under the same gunicorn settings; return the port."""
    port = free_port()
    if system == "engine":
        flows = backend.tmp / "flows"
        write_flows(flows)
        start_engine_web(stack, engine_env(backend, flows, target_url), port, workers=workers)
    else:
        proc = stack.add(spawn(f"{system}-web", gunicorn_args(app, port, workers=workers), baseline_env(backend, target_url),
                               stack.logdir))
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
    return port


# --------------------------------------------------------------------------- memory


def process_tree(pid: int) -> list[Any]:
    """The psutil processes of ``pid`` and all its children; [] once it has gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class RssSampler(threading.Thread):
    """Peak RSS per process (and its children) sampled every ``interval`` seconds from /proc via psutil."""

    def __init__(self, roots: dict[str, int], interval: float = 0.2) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.roots = roots
        self.interval = interval
        self.peak: dict[str, dict[int, int]] = {name: {} for name in roots}
        self.stopped = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stopped.is_set():
            for name, pid in self.roots.items():
                for p in process_tree(pid):
                    try:
                        rss = p.memory_info().rss
                    except psutil.Error:
                        continue
                    peaks = self.peak[name]
                    peaks[p.pid] = max(peaks.get(p.pid, 0), rss)
            self.stopped.wait(self.interval)

    def stop(self) -> dict[str, dict[int, int]]:
        self.stopped.set()
        self.join(5)
        return self.peak


def gunicorn_worker_peaks(peaks: dict[int, int], master_pid: int) -> list[int]:
    """Peak RSS of gunicorn's worker processes (the master is excluded; it serves no request)."""
    return [v for pid, v in peaks.items() if pid != master_pid]


# --------------------------------------------------------------------------- store polling


def count_statuses(db_url: str, table: str = "runs") -> dict[str, int]:
    """Rows per status in ``table`` (the engine's runs, or the baseline pipeline's bench_pipeline_events)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as c:
            rows = c.execute(sqlalchemy.text(f"select status, count(*) from {table} group by status")).all()
    finally:
        engine.dispose()
    return {str(s): int(n) for s, n in rows}

