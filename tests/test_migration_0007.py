"""Upgrading to step paths (0007) keeps the done steps of runs that may still resume done (I5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from engine.migrate import upgrade
from engine.store import RunStore


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_done_steps_of_resumable_runs_get_their_state(backend: str, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path}/m.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    upgrade(url, "0006")
    store = RunStore(url)
    with store.engine.begin() as c:
        c.execute(text("insert into flow_versions (version, flow_id, path, source, created_at) values ('v', 'f', '', '', 0)"))
        c.execute(text("insert into events (id, flow_id, received_at, method, query, headers, body, content_type) "
                       "values (1, 'f', 0, 'POST', '', '[]', :b, '')"), {"b": b"{}"})
        for run_id, status in ((1, "waiting"), (2, "succeeded")):
            c.execute(text("insert into runs (id, flow_id, flow_version, event_id, status, created_at, updated_at, "
                           "deliveries) values (:i, 'f', 'v', 1, :s, 0, 0, 1)"), {"i": run_id, "s": status})
            c.execute(text("insert into step_runs (run_id, step_id, position, attempt, status, output) values "
                           "(:i, 'crm', 0, 1, 'succeeded', :o), (:i, 'later', 1, 1, 'failed', null)"),
                      {"i": run_id, "o": '{"response": {"json": {"id": 7}}}'})
    store.dispose()
    upgrade(url)
    store = RunStore(url)
    claim = store.claim(1, "w", lease_s=30)
    assert claim is not None
    states = {s.path: s.state for s in claim.steps}
    assert states == {"crm": {"status": "succeeded", "output": {"response": {"json": {"id": 7}}}}, "later": None}
    with store.engine.connect() as c:
        assert c.execute(text("select state from step_runs where run_id = 2")).scalars().all() == [None, None]
    store.dispose()
