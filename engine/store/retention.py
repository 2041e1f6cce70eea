"""Retention: prune terminal runs past their cut-off in short batches; give SQLite's free pages back."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import and_, delete, exists, or_, select, update

from engine.model import RunStatus
from engine.store.connect import StoreBase
from engine.store.schema import EventRow, RunIndexRow, RunRow, SandboxRequestRow, StepRunRow


class RetentionStore(StoreBase):
    def prune(self, *, succeeded_before: float, failed_before: float, batch: int = 500) -> Iterator[int]:
        """Delete terminal runs older than the cut-offs in short transactions; yields how many each batch took.

        Events go with their last run. Short batches keep ingress and workers flowing meanwhile.
        """
        done = [RunStatus.SUCCEEDED.value, RunStatus.FILTERED.value]
        while True:
            with self._tx() as s:
                ids = list(s.execute(
                    select(RunRow.id).where(or_(
                        and_(RunRow.status.in_(done), RunRow.finished_at < succeeded_before),
                        and_(RunRow.status == RunStatus.FAILED.value, RunRow.finished_at < failed_before),
                    )).order_by(RunRow.id).limit(batch)
                ).scalars())
                if not ids:
                    break
                events = list(s.execute(select(RunRow.event_id).where(RunRow.id.in_(ids)).distinct()).scalars())
                s.execute(delete(StepRunRow).where(StepRunRow.run_id.in_(ids)))
                s.execute(delete(RunIndexRow).where(RunIndexRow.run_id.in_(ids)))
                s.execute(update(RunRow).where(RunRow.parent_run_id.in_(ids)).values(parent_run_id=None))
                s.execute(delete(RunRow).where(RunRow.id.in_(ids)))
                s.execute(delete(EventRow).where(EventRow.id.in_(events),
                                                 ~exists().where(RunRow.event_id == EventRow.id)))
            yield len(ids)
        with self._tx() as s:
            s.execute(delete(SandboxRequestRow).where(SandboxRequestRow.created_at < succeeded_before))

    def reclaim_space(self, full: bool = False) -> None:
        """SQLite: return free pages to the file system (incremental vacuum; ``full`` runs VACUUM once,
        which also converts a database created before auto_vacuum was on)."""
        if self.dialect != "sqlite":
            return
        raw = self.engine.raw_connection()  # outside any transaction (we issue BEGIN ourselves on SQLite)
        try:
            cur = raw.cursor()
            # executescript steps the pragma to the end (execute() would free a single page)
            cur.executescript("VACUUM;" if full else "PRAGMA incremental_vacuum;")
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # free pages leave the file at checkpoint
            cur.close()
        finally:
            raw.close()
