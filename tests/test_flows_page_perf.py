"""The flows page's queries read only the last day on SQLite (at 1,000,000 runs a full index scan took 1-2.6 s).

Without ``sqlite_stat1`` (SQLite never analyzes by itself) the planner's choice does not depend on the table's
size, so the plans on a small store are the plans on a big one. PostgreSQL plans by statistics: checked by hand
on a filled store (docs/benchmarks.md).
"""

from __future__ import annotations

import time
from pathlib import Path

from engine.store import RunStore
from tests.support import query_plans


def test_flow_stats_reads_the_window_by_flow_and_created_at(tmp_path: Path) -> None:
    store = RunStore(f"sqlite:///{tmp_path}/p.db")
    store.create_all()
    plans = query_plans(store, lambda: store.flow_stats(["a", "b"], since=time.time() - 86400, bucket_s=3600))
    store.dispose()
    counts, *last_failures = [plan for _sql, plan in plans]
    assert counts.startswith("SEARCH runs USING INDEX ix_runs_flow_created (flow_id=? AND created_at>?)"), counts
    assert len(last_failures) == 2
    assert all(p == "SEARCH runs USING INDEX ix_runs_flow_status_id (flow_id=? AND status=?)" for p in last_failures)
