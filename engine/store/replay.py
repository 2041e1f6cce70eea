"""Replay (I5): a new queued run on the same event, linked to its parent; never the parent itself."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import select

from engine.model import RunStatus, StepStatus
from engine.store.connect import StoreBase
from engine.store.schema import RunIndexRow, RunRow, StepRunRow, _step_result, _step_values


class ReplayStore(StoreBase):
    def create_linked_run(self, parent_id: int, kind: str, version: str, *, keep_steps_before: str | None = None,
                          now: float | None = None) -> int:
        """A new queued run on the same event, linked to its parent.

        With ``keep_steps_before`` (retry from a step), the parent's succeeded results before that
        step are copied so they are not executed again.
        """
        return self.create_linked_runs([(parent_id, version)], kind, keep_steps_before=keep_steps_before, now=now)[0]

    def create_linked_runs(self, parents: Sequence[tuple[int, str]], kind: str, *,
                           keep_steps_before: str | None = None, now: float | None = None) -> list[int]:
        """Linked runs for many (parent id, flow version) pairs, 500 per transaction; KeyError if a parent is gone."""
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
                        raise KeyError(parent_id)
                    run = RunRow(flow_id=parent.flow_id, flow_version=version, event_id=parent.event_id,
                                 status=RunStatus.QUEUED.value, dedupe_key=None, order_key=parent.order_key,
                                 created_at=now, updated_at=now, parent_run_id=parent.id, replay_kind=kind)
                    s.add(run)
                    created.append((parent_id, run))
                s.flush()
                by_parent = {parent_id: run.id for parent_id, run in created}
                for idx in s.execute(select(RunIndexRow).where(RunIndexRow.run_id.in_(list(by_parent)))).scalars():
                    s.add(RunIndexRow(run_id=by_parent[idx.run_id], name=idx.name, value=idx.value))
                if keep_steps_before is not None:
                    for parent_id, run in created:
                        steps = s.execute(select(StepRunRow).where(StepRunRow.run_id == parent_id)
                                          .order_by(StepRunRow.id)).scalars()
                        for row in steps:
                            if row.path == keep_steps_before:
                                break
                            if row.status in (StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value):
                                s.add(StepRunRow(**_step_values(run.id, _step_result(row, True))))
                new_ids.extend(run.id for _, run in created)
        return new_ids
