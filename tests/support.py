"""Real collaborators for tests: an HTTP target server that records and scripts responses, process helpers."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

if TYPE_CHECKING:
    from engine.store import RunStore

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # arrival time (time.time())

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Target:
    """A real HTTP server on 127.0.0.1. ``script[path]`` is a list of (status, body) answered in order,
    the last one repeating; unscripted paths answer 200 with a JSON id."""

    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)
    script: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    delay: float = 0.0
    stall_first: dict[str, float] = field(default_factory=dict)  # path -> seconds the first request is held
    on_request: Callable[[bool], None] | None = None  # called with True on arrival, False before answering
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def requests(self, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if path is None or s.path == path]

    def close(self) -> None:
        """Stop serving and close the listening socket (shutdown alone leaves it open: a ResourceWarning)."""
        self.server.shutdown()
        self.server.server_close()


def start_target() -> Target:
    target: Target

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with target.lock:
                target.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                        time.time()))
                n = sum(1 for s in target.seen if s.path == self.path)
                stall = target.stall_first.get(self.path, 0.0) if n == 1 else 0.0
                script = target.script.get(self.path)
                if script:
                    status, payload = script[min(n - 1, len(script) - 1)]
                else:
                    status, payload = 200, {"id": f"t{n}"}
            hook = target.on_request
            if hook:
                hook(True)
            if target.delay or stall:
                time.sleep(target.delay + stall)
            if hook:
                hook(False)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the caller died or gave up (fault tests do this on purpose)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    target = Target(server)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return target


def signed_flow(flow_id: str, *steps: dict[str, Any]) -> str:
    """The YAML of flow ``flow_id``: Stripe-signed events (secret ``${STRIPE_SECRET}``), deduplicated by ``$.id``,
    run through ``steps`` (each a step as YAML would spell it, e.g. from http_step)."""
    trigger = {"verify": {"provider": "stripe", "secret": "${STRIPE_SECRET}"}, "dedupe": "$.id"}
    return yaml.safe_dump({"id": flow_id, "trigger": trigger, "steps": list(steps)}, sort_keys=False)


def http_step(step_id: str, url: str, body: dict[str, Any], timeout: str | None = None,
              retry: dict[str, Any] | None = None) -> dict[str, Any]:
    """An http step sending ``body`` as JSON to ``url``; without ``timeout`` or ``retry`` the step's defaults apply."""
    http: dict[str, Any] = {"url": url, "json": body}
    if timeout:
        http["timeout"] = timeout
    if retry:
        http["retry"] = retry
    return {"id": step_id, "http": http}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll until predicate() is truthy; fail with ``what`` after timeout (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def hookline(*args: str, env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `hookline <args>` as a real process with its own environment; its output goes to ``log``."""
    command = [sys.executable, "-m", "engine.app.cli", *args]
    if log is None:
        return subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, start_new_session=True)
    with open(log, "ab") as out:  # the child has its own copy of the descriptor: ours is closed at once
        return subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen[bytes], sig: int = 15) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


@contextlib.contextmanager
def serving(*args: str, port: int, env: dict[str, str], log: Path) -> Iterator[str]:
    """``hookline <args> --port <port>`` as a real process until /healthz answers; its base URL. The
    process is stopped afterwards and the end of its log printed (pytest shows it when a test failed)."""
    proc = hookline(*args, "--port", str(port), env=env, log=log)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(base + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=60, what=f"hookline {args[0]} on {port}")
        yield base
    finally:
        stop(proc)
        print(log.read_text()[-3000:])


@dataclass
class Stack:
    """`hookline web` (gunicorn) and `hookline worker` processes on one database and queue; ``close`` stops them."""

    tmp: Path
    env: dict[str, str]
    db_url: str  # what the test reads through
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _store: RunStore | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store(self) -> RunStore:
        """A RunStore on the stack's database, disposed with the stack (an undisposed one leaks its connections)."""
        if self._store is None:
            from engine.store import RunStore

            self._store = RunStore(self.db_url)
        return self._store

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        proc = hookline(*args, env=self.env, log=self.tmp / f"{name}.log")
        self.procs[name] = proc
        return proc

    def start_web(self, workers: int = 2, threads: int = 4) -> None:
        self.start("web", "web", "--port", str(self.port), "--workers", str(workers), "--threads", str(threads))
        wait_for(self._healthy, timeout=30, what=f"web /healthz\n{self.logs()}")

    def start_worker(self, name: str, threads: int = 2) -> subprocess.Popen[bytes]:
        return self.start(name, "worker", "--workers", str(threads))

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, body: dict[str, Any], flow: str = "pay", **kw: Any) -> httpx.Response:
        """POST an event, Stripe-signed with STRIPE_SECRET when the stack has one."""
        from engine.presets import VerifyConfig, sign

        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if "STRIPE_SECRET" in self.env:
            cfg = VerifyConfig("stripe", (self.env["STRIPE_SECRET"],), {"tolerance": 300})
            headers.update(sign(cfg, raw, env={}, now=time.time()))
        return httpx.post(f"{self.url}/hooks/{flow}", content=raw, headers=headers, timeout=10, **kw)

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in sorted(self.tmp.glob("*.log")))

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("*.log")))

    def close(self) -> None:
        for proc in self.procs.values():
            stop(proc)
        if self._store is not None:
            self._store.dispose()


def make_stack(request: Any, tmp_path: Path, flows: dict[str, str], env: dict[str, str]) -> Iterator[Stack]:
    """Flows in a temp dir, a migrated database (SQLite, or PostgreSQL + Redis for request.param "postgres")
    and an environment for `hookline web` / `hookline worker` processes; stops them all afterwards."""
    from engine.migrate import upgrade

    flows_dir = tmp_path / "flows"
    flows_dir.mkdir()
    for name, text in flows.items():
        (flows_dir / f"{name}.yaml").write_text(text)
    env = {"HOOKLINE_FLOWS_DIR": str(flows_dir), "HOOKLINE_LEASE_S": "1", "HOOKLINE_REAPER_INTERVAL_S": "0.3",
           "HOOKLINE_QUEUED_GRACE_S": "2", "HOOKLINE_SANDBOX": "0", **env}
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path}/hookline.db"
        env["HOOKLINE_HUEY_PATH"] = str(tmp_path / "queue.db")
    else:
        db_url = str(request.getfixturevalue("pg_url"))
        env["HOOKLINE_REDIS_URL"] = str(request.getfixturevalue("redis_url"))
    env["HOOKLINE_DATABASE_URL"] = db_url
    upgrade(db_url)
    stack = Stack(tmp_path, env, db_url)
    try:
        yield stack
    finally:
        stack.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(stack.logs())


def selects(store: Any, call: Callable[[], Any]) -> list[tuple[str, Any]]:
    """(statement, parameters) of every SELECT that ``call`` makes on ``store``, in order."""
    from sqlalchemy import event

    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, _many: bool) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            seen.append((sql, params))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    return seen


def query_plans(store: Any, call: Any) -> list[tuple[str, str]]:
    """(statement, EXPLAIN QUERY PLAN) of every SELECT on runs that ``call`` makes (a SQLite RunStore)."""
    seen = [(sql, params) for sql, params in selects(store, call) if "FROM runs" in sql]
    raw = store.engine.raw_connection()
    try:
        return [(sql, " | ".join(r[3] for r in raw.cursor().execute("EXPLAIN QUERY PLAN " + sql, params)))
                for sql, params in seen]
    finally:
        raw.close()


def in_fork(fn: Any, *args: Any, seconds: float = 4.0, mem_mb: int = 384) -> tuple[str, str, float]:
    """Run fn(*args) in a forked child limited to its current size + ``mem_mb`` of address space; returns
    (outcome, message, elapsed): outcome is the exception class name, "ok", or "timeout", unless fn returns
    an (outcome, message) pair itself. A runaway parser or template then cannot take the test run down."""
    mp = multiprocessing.get_context("fork")
    recv, send = mp.Pipe(duplex=False)

    def child() -> None:
        vm = int(re.search(r"VmSize:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024  # type: ignore[union-attr]
        resource.setrlimit(resource.RLIMIT_AS, (vm + mem_mb * 2**20, vm + mem_mb * 2**20))
        started = time.perf_counter()
        try:
            result = fn(*args)
            outcome, message = result if isinstance(result, tuple) else ("ok", "")
        except BaseException as exc:  # noqa: BLE001 - report whatever happened to the parent
            outcome, message = type(exc).__name__, str(exc)[:300]
        send.send((outcome, message, time.perf_counter() - started))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: fine for pure computation
        proc = mp.Process(target=child, daemon=True)
        proc.start()
    try:
        return recv.recv() if recv.poll(seconds) else ("timeout", f"still running after {seconds}s", seconds)
    finally:
        proc.kill()
        proc.join(5)
