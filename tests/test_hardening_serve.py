"""Issue 16 items 5-6: truncated, slow and half-sent requests against a running ``hookline serve`` (waitress)
and ``hookline web`` (gunicorn), over raw sockets on 127.0.0.1. None of them may become a run."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, hookline, serving

FLOW = "id: plain\nsteps:\n  - id: t\n    transform:\n      x: \"{{ event.id }}\"\n"
REQUEST_TIMEOUT = 2.0


def _start(tmp_path: Path, *args: str) -> Iterator[str]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "plain.yaml").write_text(FLOW)
    port = free_port()
    env = {"HOOKLINE_DATABASE_URL": f"sqlite:///{tmp_path}/h.db", "HOOKLINE_FLOWS_DIR": str(flows),
           "HOOKLINE_HUEY_PATH": str(tmp_path / "q.db")}
    if args[0] == "web":
        hookline("db", "upgrade", env=env).wait(60)
    with serving(*args, port=port, env=env, log=tmp_path / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ``hookline serve`` for the attacks below; each test counts the runs it made itself."""
    yield from _start(tmp_path_factory.mktemp("serve"), "serve", "--request-timeout", str(REQUEST_TIMEOUT),
                      "--idle-timeout", "10")


def _raw(base: str, data: bytes) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(data)
    return sock


def _reply(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        out += chunk
    sock.close()
    return out


def _runs(base: str) -> list[dict[str, object]]:
    runs: list[dict[str, object]] = httpx.get(base + "/api/runs", timeout=10).json()["runs"]
    return runs


HEAD = b"POST /hooks/plain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def _one_good_run_only(base: str, before: int) -> None:
    """A complete webhook after the attack is the only new run: the server still works and made nothing else."""
    assert httpx.post(base + "/hooks/plain", json={"id": "good"}, timeout=10).status_code == 202
    assert len(_runs(base)) == before + 1


def test_a_body_shorter_than_its_content_length_is_400_and_no_run(served: str) -> None:
    before = len(_runs(served))
    sock = _raw(served, HEAD + b"Content-Length: 100\r\n\r\n" + b'{"id": "x"}')  # 11 of 100 bytes
    sock.shutdown(socket.SHUT_WR)
    assert _reply(sock).startswith(b"HTTP/1.1 400 ")
    _one_good_run_only(served, before)


def test_headers_cut_mid_name_are_400_and_no_run(served: str) -> None:
    before = len(_runs(served))
    sock = _raw(served, HEAD + b"Content-Le")
    sock.shutdown(socket.SHUT_WR)
    assert _reply(sock).startswith(b"HTTP/1.1 400 ")
    _one_good_run_only(served, before)


def test_a_short_body_held_open_is_cut_off_at_the_request_timeout(served: str) -> None:
    before = len(_runs(served))
    sent = time.monotonic()
    sock = _raw(served, HEAD + b"Content-Length: 100\r\n\r\n" + b'{"id":')  # 7 of 100 bytes, then silence
    reply = _reply(sock)
    held = time.monotonic() - sent
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert REQUEST_TIMEOUT <= held < REQUEST_TIMEOUT + 15, held  # cut off by the deadline, not by the client
    _one_good_run_only(served, before)


def test_slowloris_holds_no_thread_and_makes_no_run(served: str) -> None:
    """150 sockets stuck mid-headers, plus one that trickles a byte every 0.3 s: webhooks are still served,
    every slow socket is closed once its request deadline passes, and none of them becomes a run."""
    before = len(_runs(served))
    stuck = [_raw(served, HEAD + b"X-Slow") for _ in range(150)]
    trickler = _raw(served, b"P")
    started = time.monotonic()
    for i in range(3):
        ack = httpx.post(served + "/hooks/plain", json={"id": f"during-{i}"}, timeout=10)
        assert ack.status_code == 202
    closed_at = None
    for char in b"OST /hooks/plain HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200:
        try:
            trickler.send(bytes([char]))
        except OSError:
            closed_at = time.monotonic()
            break
        time.sleep(0.3)
    trickler.close()
    assert closed_at is not None, "the trickling socket was never cut off"
    assert closed_at - started >= REQUEST_TIMEOUT  # though never idle, it got exactly its deadline
    replies = [_reply(s) for s in stuck]
    assert all(r.startswith(b"HTTP/1.1 408 ") for r in replies), {r[:20] for r in replies}
    assert len(_runs(served)) == before + 3  # the three complete webhooks, nothing of the slow sockets


def test_gunicorn_refuses_a_truncated_body_too(tmp_path: Path) -> None:
    """``hookline web``: gunicorn hands the app a short body; the ingress view counts it and answers 400."""
    for base in _start(tmp_path, "web", "--workers", "1", "--threads", "2"):
        sock = _raw(base, HEAD + b"Content-Length: 100\r\n\r\n" + b'{"id": "x"}')
        sock.shutdown(socket.SHUT_WR)
        reply = _reply(sock)
        assert reply.startswith(b"HTTP/1.1 400 ") and b"11 of its 100 declared bytes" in reply, reply[:300]
        assert _runs(base) == []


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_sqlite_file_deleted_or_replaced_while_serving_is_503_never_202(tmp_path: Path, how: str) -> None:
    """Issue 16 item 7: open connections kept writing into the unlinked file; every 202 after that was lost."""
    for base in _start(tmp_path, "serve"):
        assert httpx.post(base + "/hooks/plain", json={"id": "before"}, timeout=10).status_code == 202
        db = tmp_path / "h.db"
        if how == "deleted":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
        else:
            (tmp_path / "other.db").write_bytes(db.read_bytes())
            (tmp_path / "other.db").replace(db)
        for i in range(3):
            ack = httpx.post(base + "/hooks/plain", json={"id": f"after-{i}"}, timeout=10)
            assert ack.status_code == 503, ack.text
        ready = httpx.get(base + "/readyz", timeout=10)
        assert ready.status_code == 503 and how in ready.json()["checks"]["database"]
