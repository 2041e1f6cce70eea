"""The durable-ingest ceiling of this stack: Flask inserts the raw body in one SQL row and enqueues one Huey task.

Run under the same gunicorn command line as `hookline web` (bench.common.gunicorn_args) with
``bench.baseline_ingest:create_app()``. Same database and queue settings as the engine (SQLite WAL,
synchronous=FULL, BEGIN IMMEDIATE taken with the engine's short retries (engine.store.begin_immediate),
a queue file with synchronous=NORMAL; PostgreSQL through psycopg 3) but no verification, no dedupe,
no header storage and no liveness check on pooled connections: the least a durable receiver can do.
Environment: BENCH_DB_URL, BENCH_REDIS_URL (Redis queue) or BENCH_QUEUE_PATH (SQLite queue).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, request
from huey import Huey, RedisHuey
from huey.storage import SqliteStorage
from sqlalchemy import Column, Float, Integer, LargeBinary, MetaData, String, Table, create_engine, event
from sqlalchemy.engine import Engine

from engine.store import begin_immediate

metadata = MetaData()
raw_events = Table(
    "bench_raw_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow", String(100)),
    Column("received_at", Float),
    Column("body", LargeBinary),
)


def make_db(url: str) -> Engine:
    """An Engine with the store's SQLite settings (engine/store.py:make_engine), without pre-ping."""
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False} if sqlite else {})
    if sqlite:

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000"):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            begin_immediate(conn.connection.dbapi_connection)

    return engine


class QueueStorage(SqliteStorage):  # type: ignore[misc]
    """The engine's queue settings (engine/app/tasks.py QueueStorage): WAL, synchronous=NORMAL."""

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn


def make_huey(name: str) -> Huey:
    redis_url = os.environ.get("BENCH_REDIS_URL", "")
    if redis_url:
        return RedisHuey(name, url=redis_url, results=False)
    return Huey(name, storage_class=QueueStorage, filename=os.environ.get("BENCH_QUEUE_PATH", ":memory:"),
                results=False, timeout=30)


huey = make_huey("baseline-ingest")


@huey.task()
def process(event_id: int) -> None:
    """Never executed during the ingest measurement (no consumer runs, as for the engine)."""


def hook_app(receive: Callable[[str, bytes], Any]) -> Flask:
    """The routes both baselines have: GET /healthz, and POST /hooks/<flow> answered by ``receive(flow, raw body)``."""
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"ok": True})

    @app.post("/hooks/<flow>")
    def hook(flow: str) -> Any:
        return receive(flow, request.get_data())

    return app


def create_app() -> Flask:
    db = make_db(os.environ["BENCH_DB_URL"])

    def receive(flow: str, body: bytes) -> Any:
        with db.begin() as conn:
            event_id = conn.execute(raw_events.insert().values(flow=flow, received_at=time.time(), body=body)
                                    ).inserted_primary_key[0]
        process(event_id)
        return jsonify({"ok": True, "id": event_id}), 202

    return hook_app(receive)
