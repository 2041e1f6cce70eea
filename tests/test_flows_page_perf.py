"""The flows page's queries read only the last day on SQLite (at 1,000,000 runs a full index scan took 1-2.6 s).

Without ``sqlite_stat1`` (SQLite never analyzes by itself) the planner's choice does not depend on the table's
size, so the plans on a small store are the plans on a big one. PostgreSQL plans by statistics: checked by hand
on a filled store (docs/benchmarks.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

from engine.store import RunStore


def _plans(store: RunStore, call: Any) -> list[tuple[str, str]]:
    """(statement, EXPLAIN QUERY PLAN) of every SELECT on runs that ``call`` makes."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, _many: bool) -> None:
        if sql.lstrip().upper().startswith("SELECT") and "FROM runs" in sql:
            seen.append((sql, params))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    raw = store.engine.raw_connection()
    try:
        return [(sql, " | ".join(r[3] for r in raw.cursor().execute("EXPLAIN QUERY PLAN " + sql, params)))
                for sql, params in seen]
    finally:
        raw.close()


def test_flow_stats_reads_the_window_by_flow_and_created_at(tmp_path: Path) -> None:
    store = RunStore(f"sqlite:///{tmp_path}/p.db")
    store.create_all()
    plans = _plans(store, lambda: store.flow_stats(["a", "b"], since=time.time() - 86400, bucket_s=3600))
    store.dispose()
    counts, *last_failures = [plan for _sql, plan in plans]
    assert counts.startswith("SEARCH runs USING INDEX ix_runs_flow_created (flow_id=? AND created_at>?)"), counts
    assert len(last_failures) == 2
    assert all(p == "SEARCH runs USING INDEX ix_runs_flow_status_id (flow_id=? AND status=?)" for p in last_failures)
