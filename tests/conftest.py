"""Fixtures: settings, real stores (SQLite in tmp_path, PostgreSQL in a private schema), a real HTTP
target, and factories for flows and events."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from engine.config import Settings
from engine.loader import load_flow
from engine.model import Event, Flow, Headers
from engine.store import RunStore
from tests.support import Target, start_target

PG_URL = os.environ.get("HOOKLINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HOOKLINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _unavailable(kind: str, exc: Exception) -> None:
    if os.environ.get("CI"):
        raise RuntimeError(f"{kind} must be reachable under CI: {exc}")
    pytest.skip(f"{kind} not reachable ({exc}); set HOOKLINE_TEST_{kind.upper()}_URL")


@pytest.fixture(scope="session")
def pg_base() -> str:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_URL)
        with engine.connect() as c:
            c.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001
        _unavailable("postgres", exc)
    return PG_URL


@pytest.fixture
def pg_url(pg_base: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    import sqlalchemy

    schema = f"hl_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(pg_base, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sqlalchemy.text(f"create schema {schema}"))
    sep = "&" if "?" in pg_base else "?"
    yield f"{pg_base}{sep}options=-csearch_path%3D{schema}"
    with engine.connect() as c:
        c.execute(sqlalchemy.text(f"drop schema {schema} cascade"))
    engine.dispose()


@pytest.fixture(scope="session")
def redis_base() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except Exception as exc:  # noqa: BLE001
        _unavailable("redis", exc)
    return REDIS_URL


@pytest.fixture
def redis_url(redis_base: str) -> str:
    """A Redis URL on a database index no one else uses in this run, emptied first."""
    import redis

    url = redis_base.rsplit("/", 1)[0] + "/" + str(9 + (os.getpid() % 6))
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/hookline.db"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/hookline.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[RunStore]:
    s = RunStore(db_url)
    s.create_all()
    yield s
    s.dispose()


@pytest.fixture
def target() -> Iterator[Target]:
    """A scripted HTTP server on 127.0.0.1 (tests.support.Target), closed after the test; tests/faults use it too."""
    t = start_target()
    yield t
    t.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    return Settings(database_url=sqlite_url, flows_dir=str(flows), reaper_interval_s=0.2, queued_grace_s=1.0)


def make_flow(steps: list[dict[str, Any]] | None = None, **kw: Any) -> Flow:
    """A Flow from a dict; ``steps`` default to one transform."""
    doc = {"id": kw.pop("id", "test_flow"), "steps": steps or [{"id": "t", "transform": {"x": 1}}], **kw}
    return load_flow(yaml.safe_dump(doc, sort_keys=False), "test_flow.yaml")


def make_event(body: Any = None, headers: dict[str, str] | None = None, **kw: Any) -> Event:
    return Event(body=body if body is not None else {"id": "evt_1", **kw}, headers=Headers(headers or {}))


class Queue:
    """An in-process stand-in for Huey's queue: records (run_id, delay) so tests execute by hand."""

    def __init__(self) -> None:
        self.items: list[tuple[int, float]] = []

    def __call__(self, run_id: int, delay: float) -> None:
        self.items.append((run_id, delay))

    def pop(self) -> tuple[int, float]:
        return self.items.pop(0)


@pytest.fixture
def make_service(tmp_path: Path) -> Any:
    """make_service(flows={"name": yaml_text}, db_url=..., env=..., **settings) -> (Service, Queue)."""
    from engine.catalog import FlowCatalog
    from engine.service import Service

    made: list[Any] = []

    def factory(flows: dict[str, str], db_url: str, env: dict[str, str] | None = None, **overrides: Any) -> Any:
        flows_dir = tmp_path / f"flows{len(made)}"
        flows_dir.mkdir()
        for name, text in flows.items():
            (flows_dir / f"{name}.yaml").write_text(text)
        settings = Settings(database_url=db_url, flows_dir=str(flows_dir), **overrides)
        store = RunStore(db_url)
        store.create_all()
        queue = Queue()
        svc = Service(settings, store, FlowCatalog(flows_dir), enqueue=queue, env=env or {})
        made.append(svc)
        return svc, queue

    yield factory
    for svc in made:
        svc.http.close()
        svc.store.dispose()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    """Expose each phase's report on the item (fixtures print process logs when a test failed)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
