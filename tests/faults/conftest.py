"""Fixtures of the fault suite: a private Redis per test, and a factory for whole Hookline stacks
(gunicorn web + worker processes) on the embedded SQLite set-up or on PostgreSQL + Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from engine.migrate import upgrade
from tests.faults.infra import SECRET, RedisServer, Stack, TcpProxy

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server started for this test only (the shared one on 6379 is never stopped)."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    try:
        server = RedisServer(workdir)
    except FileNotFoundError:
        if os.environ.get("CI"):
            raise
        pytest.skip("redis-server is not installed")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """make_stack(backend, flows={"name": yaml}, env={...}, db_proxy=False) -> Stack (processes not started).

    ``db_proxy=True`` (PostgreSQL only) puts a TcpProxy between Hookline's processes and the server; the
    test itself reads the database directly, so it can look while Hookline cannot. The proxy is
    ``stack.db_proxy``.
    """
    stacks: list[Stack] = []
    proxies: list[TcpProxy] = []

    def factory(backend: str, flows: dict[str, str], env: dict[str, str] | None = None,
                db_proxy: bool = False) -> Stack:
        flows_dir = tmp_path / "flows"
        flows_dir.mkdir(exist_ok=True)
        for name, text in flows.items():
            (flows_dir / f"{name}.yaml").write_text(text)
        full_env = {
            "HOOKLINE_FLOWS_DIR": str(flows_dir), "STRIPE_SECRET": SECRET, "HOOKLINE_LEASE_S": "1",
            "HOOKLINE_REAPER_INTERVAL_S": "0.3", "HOOKLINE_QUEUED_GRACE_S": "2", "HOOKLINE_SANDBOX": "0",
            "HOOKLINE_HTTP_TIMEOUT_S": "3", **(env or {}),
        }
        if backend == "sqlite":
            db_url = f"sqlite:///{tmp_path}/hookline.db"
            full_env["HOOKLINE_HUEY_PATH"] = str(tmp_path / "queue.db")
            app_url = db_url
        else:
            db_url = str(request.getfixturevalue("pg_url"))
            full_env.setdefault("HOOKLINE_REDIS_URL", request.getfixturevalue("own_redis").url)
            app_url = db_url
            if db_proxy:
                u = make_url(db_url)
                proxy = TcpProxy(u.host or "127.0.0.1", u.port or 5432)
                proxies.append(proxy)
                app_url = u.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        full_env["HOOKLINE_DATABASE_URL"] = app_url
        upgrade(db_url)
        stack = Stack(tmp_path, full_env, db_url, backend=backend, db_proxy=proxies[-1] if db_proxy else None)
        stacks.append(stack)
        request.node.addfinalizer(stack.close)  # runs before own_redis's teardown (registered earlier)
        return stack

    yield factory
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for stack in stacks:
        if failed:
            print(stack.logs())
    for proxy in proxies:
        proxy.close()
