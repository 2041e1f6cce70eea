"""A fast local HTTP target for the outbound calls: asyncio protocol, HTTP/1.1 keep-alive, no framework.

``python -m bench.target --port P`` answers every request 200 with ``{"id": <tag>}`` and records
(arrival time, path, tag) in memory, where ``tag`` is the ``external_id`` or ``contact_id`` found in
the JSON body (the event's send timestamp is inside it, see bench.common.stripe_event).
``GET /_arrivals?from=N`` returns records N.. as text lines ``<time> <path> <tag>``; ``GET /_reset``
clears them. Its ceiling is measured with wrk before it is used (bench/e2e.py).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

TAG = re.compile(rb'"(?:external_id|contact_id)"\s*:\s*"([^"]+)"')
arrivals: list[tuple[float, str, str]] = []


def _answer(status: str, payload: bytes, ctype: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
            + str(len(payload)).encode() + b"\r\n\r\n" + payload)


class Handler(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            lower = head.lower()
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r\n", i + 2)
                length = int(lower[i + 17 : j if j >= 0 else len(lower)].strip())
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.transport.write(self.handle(head, body))

    def handle(self, head: bytes, body: bytes) -> bytes:
        line = head.split(b"\r\n", 1)[0].split(b" ")
        path = line[1].decode() if len(line) > 1 else "/"
        if path.startswith("/_arrivals"):
            start = int(path.partition("from=")[2] or 0)
            text = "".join(f"{t:.6f} {p} {tag}\n" for t, p, tag in arrivals[start:]).encode()
            return _answer("200 OK", text, b"text/plain")
        if path == "/_reset":
            arrivals.clear()
            return _answer("200 OK", b"ok", b"text/plain")
        m = TAG.search(body)
        tag = m.group(1).decode() if m else "-"
        arrivals.append((time.time(), path, tag))
        return _answer("200 OK", b'{"id":"' + tag.encode() + b'"}')


async def _serve(protocol: type[asyncio.Protocol], port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, "127.0.0.1", port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(protocol: type[asyncio.Protocol], description: str | None) -> None:
    """``--port P``: serve ``protocol`` on 127.0.0.1:P until interrupted (this mock and bench/keymock.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    try:
        asyncio.run(_serve(protocol, port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(Handler, __doc__)
