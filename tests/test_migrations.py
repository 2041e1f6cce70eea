"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from engine.migrate import upgrade
from engine.store import Base, make_engine


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_match_the_models(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path}/m.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    upgrade(url)
    upgrade(url)  # idempotent
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_order_and_parent_indexes_are_partial_and_serve_their_queries(tmp_path: Path, pg_url: str) -> None:
    """Runs without an order key or a parent cost no entry in those indexes (two index writes fewer per
    webhook), and the order_by blocker, next-in-order and replay-children lookups still use them."""
    from sqlalchemy import text

    from engine.store import RunStore
    from tests.support import query_plans

    url = f"sqlite:///{tmp_path}/p.db"
    upgrade(url)
    store = RunStore(url)
    ids = [store.accept(flow_id="f", version="v", source="", path="", method="POST", query="", headers=[],
                        body=b"{}", content_type="", dedupe_key=None, order_key=key).run_id for key in ("o", "o")]
    plans = query_plans(store, lambda: (store.claim(ids[1], "w", lease_s=30), store.next_in_order("f", "o"),
                                        store.get_run(ids[0])))
    with store.engine.connect() as c:
        sqlite_defs = dict(c.execute(text("SELECT name, sql FROM sqlite_master WHERE name IN "
                                          "('ix_runs_order', 'ix_runs_parent')")).all())
    store.dispose()
    assert sqlite_defs["ix_runs_order"].endswith("WHERE order_key IS NOT NULL"), sqlite_defs
    assert sqlite_defs["ix_runs_parent"].endswith("WHERE parent_run_id IS NOT NULL"), sqlite_defs
    by_index = " ".join(plan for _sql, plan in plans)
    assert "USING INDEX ix_runs_order (flow_id=? AND order_key=?" in by_index  # the blocker and the next in order
    assert "USING INDEX ix_runs_parent (parent_run_id=?)" in by_index  # replay children on run detail

    upgrade(pg_url)
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        defs = dict(conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE indexname IN "
                                      "('ix_runs_order', 'ix_runs_parent') AND schemaname = current_schema()")).all())
    engine.dispose()
    assert defs["ix_runs_order"].endswith("WHERE (order_key IS NOT NULL)"), defs
    assert defs["ix_runs_parent"].endswith("WHERE (parent_run_id IS NOT NULL)"), defs
