"""The peers mock with a memory: like ../shared/peers/mock_server.js, and it records each Idempotency-Key.

``python -m bench.keymock --port P`` answers every POST/PUT 200 ``{"ok":true}`` and counts it;
``GET /__count`` -> ``{"hits": N, "conns": M}`` as the Node mock does, ``GET /__keys`` -> one line per
call (``<Idempotency-Key or ->``), ``POST /__reset`` clears both. The SIGKILL mode of bench/peers.py
uses it to tell lost runs (an acknowledged run whose key never arrived) from doubled ones (a run
called under a key that belongs to no run, or a key answered more than once). Node's mock cannot say
which run a hit belongs to; the peer comparisons keep using it.
"""

from __future__ import annotations

import asyncio
import json

from bench.target import Handler, _answer, main

hits = 0
conns = 0
keys: list[str] = []


class KeyHandler(Handler):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        global conns
        conns += 1
        super().connection_made(transport)

    def handle(self, head: bytes, body: bytes) -> bytes:
        global hits, conns
        lines = head.split(b"\r\n")
        request = lines[0].split(b" ")
        method, path = request[0], (request[1].decode() if len(request) > 1 else "/")
        if path == "/__count":
            return _answer("200 OK", json.dumps({"hits": hits, "conns": conns}).encode())
        if path == "/__keys":
            return _answer("200 OK", "".join(k + "\n" for k in keys).encode(), b"text/plain")
        if path == "/__reset":
            hits, conns = 0, 0
            keys.clear()
            return _answer("200 OK", b"{}")
        if method != b"GET":
            hits += 1
            key = next((line.split(b":", 1)[1].strip().decode() for line in lines[1:]
                        if line.lower().startswith(b"idempotency-key:")), "-")
            keys.append(key)
        return _answer("200 OK", b'{"ok":true}')


if __name__ == "__main__":
    main(KeyHandler, __doc__)
