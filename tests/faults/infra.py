"""Machinery for the fault suite: real processes, a cuttable TCP proxy, a private Redis, a steady event
stream and a status monitor. The checks every fault test shares are in tests/faults/oracles.py.

Everything listens on 127.0.0.1. Nothing here touches the shared PostgreSQL cluster or the shared Redis
on 6379: outages are simulated with a proxy this process owns, or with a redis-server this process started.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from engine.presets import VerifyConfig, sign
from engine.store import RunStore
from tests import support
from tests.support import free_port, wait_for

SECRET = "whsec_fault_suite_secret"
TERMINAL = {"succeeded", "failed", "filtered"}


# --- a TCP proxy we can cut ----------------------------------------------------------------------------


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), waking any thread blocked in recv on it first."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class TcpProxy:
    """127.0.0.1:<port> -> upstream. ``cut()`` resets every open connection and every new one until
    ``restore()``: to its clients the upstream looks stopped (connections die, reconnects fail at once)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port: int = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.closed = False
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.refused = 0  # connections reset while cut
        threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=3)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self.lock:
                if not self.up.is_set():
                    _reset(client)
                    _reset(upstream)
                    continue
                self.conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.conns.discard(src)
                self.conns.discard(dst)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        with self.lock:
            self.up.clear()
            conns, self.conns = self.conns, set()
        for s in conns:
            _reset(s)

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.closed = True
        self.cut()
        try:
            self.listener.close()
        except OSError:
            pass


# --- a private Redis -----------------------------------------------------------------------------------


class RedisServer:
    """A redis-server of our own on a free port (no persistence: a restart loses the queue, as in the worst case)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        with open(self.workdir / "redis.log", "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--dir", str(self.workdir), "--protected-mode", "no"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.ping, timeout=10, interval=0.02, what=f"redis-server on {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; clients see their connections die."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()


# --- processes -------------------------------------------------------------------------------------------


@dataclass
class Stack(support.Stack):
    """tests.support's Stack, knowing its backend and the proxy between Hookline and PostgreSQL, if any."""

    backend: str = "sqlite"
    db_proxy: TcpProxy | None = None  # between Hookline's processes and PostgreSQL, when asked for


def worker_pid(owner: str | None) -> int | None:
    """The pid inside a lease owner ``host:pid:suffix``."""
    if not owner:
        return None
    parts = owner.split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def all_runs(store: RunStore, flow: str | None = None) -> list[Any]:
    out: list[Any] = []
    cursor = None
    while True:
        page = store.list_runs(flow=flow, cursor=cursor, limit=500)
        out.extend(page.runs)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


# --- a steady stream of signed events ----------------------------------------------------------------


@dataclass
class Delivery:
    """One event as a provider sends it: every attempt's answer, the run it got, when it was accepted."""

    index: int
    body: bytes
    answers: list[int | str] = field(default_factory=list)  # status codes, or exception names
    timings: list[float] = field(default_factory=list)  # seconds each attempt took
    run_id: int | None = None
    accepted_at: float | None = None
    first_sent_at: float | None = None

    @property
    def accepted(self) -> bool:
        return self.run_id is not None


class EventStream:
    """Posts ``count`` signed events to ``/hooks/<flow>`` spread over ``seconds``, concurrently like a busy
    provider. With ``retry_until`` set, any non-2xx answer (or connection error) is retried every
    ``retry_every`` seconds until accepted or that deadline, as providers do."""

    def __init__(self, base_url: str, flow: str, count: int, seconds: float, *, retry_until: float = 0.0,
                 retry_every: float = 0.5, make_body: Callable[[int], dict[str, Any]] | None = None,
                 secret: str = SECRET) -> None:
        self.url = f"{base_url}/hooks/{flow}"
        self.count = count
        self.seconds = seconds
        self.retry_until = retry_until
        self.retry_every = retry_every
        self.secret = secret
        make_body = make_body or (lambda i: {"id": f"evt_{i:04d}", "type": "paid", "n": i})
        self.deliveries = [Delivery(i, json.dumps(make_body(i)).encode()) for i in range(count)]
        self.started = 0.0
        self._thread: threading.Thread | None = None
        self.client = httpx.Client(timeout=10)

    def start(self) -> EventStream:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with ThreadPoolExecutor(max_workers=16) as pool:
            for d in self.deliveries:
                at = self.started + d.index * self.seconds / max(1, self.count)
                time.sleep(max(0.0, at - time.monotonic()))
                pool.submit(self._deliver, d)

    def _deliver(self, d: Delivery) -> None:
        d.first_sent_at = time.monotonic()
        deadline = d.first_sent_at + self.retry_until
        cfg = VerifyConfig("stripe", (self.secret,), {"tolerance": 300})
        while True:
            headers = sign(cfg, d.body, env={}, now=time.time())
            headers["Content-Type"] = "application/json"
            sent = time.monotonic()
            try:
                resp = self.client.post(self.url, content=d.body, headers=headers)
                d.timings.append(time.monotonic() - sent)
                d.answers.append(resp.status_code)
                if 200 <= resp.status_code < 300:
                    d.run_id = int(resp.json()["run_id"])
                    d.accepted_at = time.monotonic()
                    return
            except httpx.HTTPError as exc:
                d.timings.append(time.monotonic() - sent)
                d.answers.append(type(exc).__name__)
            if time.monotonic() + self.retry_every > deadline:
                return
            time.sleep(self.retry_every)

    def join(self, timeout: float = 120) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "event stream did not finish"
        self.client.close()

    @property
    def accepted(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.accepted]

    def latencies(self) -> list[float]:
        """Seconds each answer took (every attempt), for providers' delivery timeouts (GitHub: 10 s)."""
        return [t for d in self.deliveries for t in d.timings] or [0.0]

    def answer_counts(self) -> Counter[str]:
        return Counter(str(a) for d in self.deliveries for a in d.answers)


# --- watching run statuses -----------------------------------------------------------------------------


class Monitor:
    """Polls the run table and remembers when each run was first seen terminal (for recovery times)."""

    def __init__(self, store: RunStore, flow: str, interval: float = 0.15) -> None:
        self.store = store
        self.flow = flow
        self.interval = interval
        self.terminal_at: dict[int, float] = {}
        self.status: dict[int, str] = {}
        self.errors = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="run-monitor", daemon=True)

    def start(self) -> Monitor:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.poll()
            self.stopped.wait(self.interval)

    def poll(self) -> None:
        try:
            runs = all_runs(self.store, self.flow)
        except Exception:  # noqa: BLE001 - the database may be cut on purpose
            self.errors += 1
            return
        now = time.monotonic()
        for r in runs:
            self.status[r.id] = r.status.value
            if r.status.value in TERMINAL:
                self.terminal_at.setdefault(r.id, now)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
