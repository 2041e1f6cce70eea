"""The HTTP server of ``hookline serve``: waitress in the same process as the worker threads, with deadlines.

Werkzeug's development server gave each connection a thread and waited on it forever: 150 sockets that
stopped mid-headers held 150 threads, and a body cut short of its Content-Length was handed to the app as
if complete. Waitress reads every request on one event loop and hands it to its bounded thread pool only
once the request is complete (headers and the whole body; bodies over 512 KiB are spooled to a temporary
file), so a slow or truncated request holds no thread and never reaches the app. On top of its idle timeout
(``channel_timeout``), ``DeadlineServer`` closes a connection whose request has not fully arrived within
``request_timeout`` of its first byte, however slowly it trickles (slowloris), and ``connection_limit``
bounds the sockets held at once (above it, new connections wait in the listen backlog).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.wasyncore import _DISCONNECTED

REQUEST_TIMEOUT_S = 15.0  # first byte of a request -> its last byte
IDLE_TIMEOUT_S = 30.0  # a keep-alive connection with nothing to do
CONNECTION_LIMIT = 200
THREADS = 8
MAX_REQUEST_BODY = 64 * 1024 * 1024  # waitress refuses more (413) before Hookline's per-flow limits apply


def _answer(status: str, message: str) -> bytes:
    body = json.dumps({"ok": False, "error": message, "status": int(status.split()[0])}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


TRUNCATED = _answer("400 Bad Request", "the request ended before its headers or its Content-Length bytes did")
TOO_SLOW = _answer("408 Request Timeout", "the request took too long to arrive")


class DeadlineChannel(HTTPChannel):  # type: ignore[misc]
    """A connection that remembers when the request it is reading began, and says why it drops one."""

    request_started: float | None = None

    def recv(self, buffer_size: int) -> bytes:
        try:
            data: bytes = self.socket.recv(buffer_size)
        except OSError as why:  # as wasyncore's recv: a reset is a close, anything else is raised
            if why.args[0] in _DISCONNECTED:
                self.handle_close()
                return b""
            raise
        if not data:  # the client closed (or half-closed) its side: a half-read request is refused, never served
            if self.request is not None and not self.requests:
                self.refuse(TRUNCATED)
            self.handle_close()
        return data

    def refuse(self, answer: bytes) -> None:
        """Best effort: a client that half-closed or is merely slow can still read why."""
        try:
            self.socket.send(answer)
        except OSError:
            pass
        self.request = None

    def received(self, data: bytes) -> Any:
        before = self.request
        result = super().received(data)
        if self.request is None:
            self.request_started = None  # nothing half-read: the request completed, or no bytes of a new one
        elif self.request is not before or self.request_started is None:
            self.request_started = time.monotonic()  # a new request began (perhaps right after a pipelined one)
        return result


class DeadlineServer(TcpWSGIServer):  # type: ignore[misc]
    """Waitress's TCP server whose maintenance pass also closes requests that are too slow to arrive."""

    channel_class = DeadlineChannel

    def __init__(self, app: Any, *, host: str, port: int, request_timeout: float = REQUEST_TIMEOUT_S,
                 idle_timeout: float = IDLE_TIMEOUT_S, connection_limit: int = CONNECTION_LIMIT,
                 threads: int = THREADS, max_body: int = MAX_REQUEST_BODY) -> None:
        self.request_timeout = request_timeout
        # "Task queue depth is N" for every request that waits for a thread: a backlog, not a fault
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        adj = Adjustments(
            host=host, port=port, threads=threads, connection_limit=connection_limit,
            channel_timeout=idle_timeout, cleanup_interval=max(0.5, min(request_timeout, idle_timeout) / 4),
            max_request_body_size=max_body, ident="Hookline", expose_tracebacks=False,
        )
        super().__init__(app, adj=adj, sockinfo=adj.listen[0])

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        cutoff = time.monotonic() - self.request_timeout
        for channel in list(self.active_channels.values()):
            started = getattr(channel, "request_started", None)
            if started is not None and started < cutoff and not channel.requests and not channel.will_close:
                channel.refuse(TOO_SLOW)
                channel.will_close = True  # waitress closes it on its next pass, as it does idle ones

    @property
    def port(self) -> int:
        return int(self.effective_port)

    def stop(self) -> None:
        """Stop accepting, close every connection and end the thread pool (requests in progress finish first)."""
        self.close()
        self.task_dispatcher.shutdown(timeout=5)
