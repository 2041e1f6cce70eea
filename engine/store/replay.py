"""Replay (I5): a new queued run on the same event, linked to its parent; never the parent itself."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import undefer

from engine.errors import RunNotFound
from engine.model import RunStatus
from engine.store.connect import StoreBase
from engine.store.schema import RunIndexRow, RunRow, StepRunRow, _step_result, _step_values

# What a retry keeps: a path ended for good with one of these (its resume state says so) is not run again.
# Failed paths run again, and so do the flow's error handler steps: the new run may fail differently.
KEPT_STATUSES = frozenset({"succeeded", "skipped", "continued"})
HANDLER_PREFIX = "on_failure."


def kept(path: str, state: Any) -> bool:
    """Whether a parent's step record is copied into a retry: done for good, and not an error handler's."""
    return (isinstance(state, dict) and state.get("status") in KEPT_STATUSES
            and not path.startswith(HANDLER_PREFIX))


class ReplayStore(StoreBase):
    def create_linked_run(self, parent_id: int, kind: str, version: str, *, keep_done: bool = False,
                          now: float | None = None) -> int:
        """A new queued run on the same event, linked to its parent.

        ``keep_done`` (retry from the failed step): the parent's records of paths done for good (``kept``)
        are copied with their resume state, so the new run continues from them rather than repeating them.
        """
        return self.create_linked_runs([(parent_id, version)], kind, keep_done=keep_done, now=now)[0]

    def create_linked_runs(self, parents: Sequence[tuple[int, str]], kind: str, *, keep_done: bool = False,
                           now: float | None = None) -> list[int]:
        """Linked runs for many (parent id, flow version) pairs, 500 per transaction; RunNotFound if a parent is gone."""
        now = time.time() if now is None else now
        new_ids: list[int] = []
        for start in range(0, len(parents), 500):
            chunk = parents[start : start + 500]
            with self._tx() as s:
                rows = {r.id: r for r in s.execute(select(RunRow).where(RunRow.id.in_([p for p, _ in chunk])))
                        .scalars()}
                created: list[tuple[int, RunRow]] = []
                for parent_id, version in chunk:
                    parent = rows.get(parent_id)
                    if parent is None:
                        raise RunNotFound(parent_id)
                    run = RunRow(flow_id=parent.flow_id, flow_version=version, event_id=parent.event_id,
                                 status=RunStatus.QUEUED.value, dedupe_key=None, order_key=parent.order_key,
                                 created_at=now, updated_at=now, parent_run_id=parent.id, replay_kind=kind)
                    s.add(run)
                    created.append((parent_id, run))
                s.flush()
                by_parent = {parent_id: run.id for parent_id, run in created}
                for idx in s.execute(select(RunIndexRow).where(RunIndexRow.run_id.in_(list(by_parent)))).scalars():
                    s.add(RunIndexRow(run_id=by_parent[idx.run_id], name=idx.name, value=idx.value))
                if keep_done:
                    # the resume state is the one reason to read the column here (pages never do)
                    steps = s.execute(select(StepRunRow).options(undefer(StepRunRow.state))
                                      .where(StepRunRow.run_id.in_(list(by_parent))).order_by(StepRunRow.id))
                    for row in steps.scalars():
                        if kept(row.path, row.state):
                            s.add(StepRunRow(**_step_values(by_parent[row.run_id], _step_result(row, True))))
                new_ids.extend(run.id for _, run in created)
        return new_ids
