"""Alert decisions (engine.alerts) shared by every worker: once per failed run, rate-limited per flow.

One short transaction per run that failed for good. The flow's row is locked first (SQLite: the write
lock of BEGIN IMMEDIATE; PostgreSQL: SELECT ... FOR UPDATE), then the run's decision is inserted unless
one exists: a second worker closing the same run (it was resumed after a crash) finds it and sends
nothing, and two runs of one flow failing at once on two machines are decided one after the other.
"""

from __future__ import annotations

import time

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from engine.alerts import AlertDecision, due
from engine.store.connect import StoreBase
from engine.store.schema import Base

_runs = Base.metadata.tables["alert_runs"]
_flows = Base.metadata.tables["alert_flows"]


class AlertStore(StoreBase):
    def claim_alert(self, run_id: int, flow_id: str, interval: float, now: float | None = None) -> AlertDecision | None:
        """Decide whether run ``run_id`` alerts; None when it was decided before (by any worker).

        Not synced to disk (``durable=False``): a process crash keeps the decision, and the next synced
        commit of the database carries it; only a power cut in between could let a run alert twice.
        """
        now = time.time() if now is None else now
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        with self._conn(durable=False) as c:
            c.execute(insert(_flows).values(flow_id=flow_id, last_sent_at=None, suppressed=0).on_conflict_do_nothing())
            flow = c.execute(select(_flows.c.last_sent_at, _flows.c.suppressed)
                             .where(_flows.c.flow_id == flow_id).with_for_update()).one()
            send = due(flow.last_sent_at, now, interval)
            taken = c.execute(insert(_runs).values(run_id=run_id, flow_id=flow_id, decided_at=now, sent=send)
                              .on_conflict_do_nothing().returning(_runs.c.run_id)).first()
            if taken is None:  # (rowcount is -1 here on psycopg)
                return None
            if send:
                c.execute(update(_flows).where(_flows.c.flow_id == flow_id).values(last_sent_at=now, suppressed=0))
                return AlertDecision(True, flow.suppressed)
            c.execute(update(_flows).where(_flows.c.flow_id == flow_id).values(suppressed=_flows.c.suppressed + 1))
            return AlertDecision(False, flow.suppressed + 1)
