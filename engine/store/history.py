"""History: the reads behind the run pages, the API and bulk actions; never the resume state."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import LargeBinary, and_, exists, func, literal, literal_column, or_, select
from sqlalchemy.orm import aliased

from engine.model import RunDetail, RunRecord, RunStatus
from engine.store.connect import StoreBase
from engine.store.schema import EventRow, RunIndexRow, RunRow, StepRunRow, _event_record, _run_record, _step_result
from engine.templating import fold

ERROR_FIELDS = ("error", "code")
"""Search prefixes read from runs' error text (``error:timeout``, ``code:422``), not from index fields."""
UNRESOLVED = "unresolved"
"""A status filter meaning failed runs that no replay or retry has followed yet."""


def _probes(value: str) -> list[str]:
    """The values a search ``name:value`` looks up: as typed and folded (``lower: true`` fields store that
    form). Both are equality probes of ix_run_index_name_value; a run stored before its field declared
    ``lower: true`` is still found by its exact value."""
    exact = value.strip()
    folded = fold(exact)
    return [exact] if folded in ("", exact) else [exact, folded]


@dataclass
class RunPage:
    runs: list[RunRecord]
    next_cursor: int | None


class HistoryStore(StoreBase):
    def get_run(self, run_id: int) -> RunDetail | None:
        with self._tx(write=False) as s:
            row = s.get(RunRow, run_id)
            if row is None:
                return None
            ev = s.get(EventRow, row.event_id)
            assert ev is not None
            steps = s.execute(select(StepRunRow).where(StepRunRow.run_id == run_id).order_by(StepRunRow.id))
            children = s.execute(select(RunRow).where(RunRow.parent_run_id == run_id).order_by(RunRow.id))
            index = s.execute(select(RunIndexRow).where(RunIndexRow.run_id == run_id))
            return RunDetail(
                run=_run_record(row), event=_event_record(ev), steps=[_step_result(r) for r in steps.scalars()],
                children=[_run_record(c) for c in children.scalars()],
                index={i.name: i.value for i in index.scalars() if i.value != ""},
            )

    def get_run_record(self, run_id: int) -> RunRecord | None:
        with self._tx(write=False) as s:
            row = s.get(RunRow, run_id)
            return _run_record(row) if row else None

    def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        q: str | None = None,
        cursor: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> RunPage:
        """Newest first, keyset-paginated on id (no OFFSET, no COUNT).

        ``q`` matches a dedupe key exactly, ``name:value`` an indexed field, a number a run id (all index
        lookups); only when none of those matches anything is it searched as text inside the raw event
        bodies, which scans. ``after`` returns runs newer than that id (live refresh).
        """
        limit = max(1, min(limit, 500))
        stmt = select(RunRow)
        if flow:
            stmt = stmt.where(RunRow.flow_id == flow)
        if status:
            statuses = [status] if isinstance(status, str) else list(status)
            if UNRESOLVED in statuses:  # failed runs with no replay or retry yet
                statuses = [RunStatus.FAILED.value if s == UNRESOLVED else s for s in statuses]
                stmt = stmt.where(or_(RunRow.status != RunStatus.FAILED.value, self._no_child()))
            stmt = stmt.where(RunRow.status.in_(statuses))
        if since is not None:
            stmt = stmt.where(RunRow.created_at >= since)
        if until is not None:
            stmt = stmt.where(RunRow.created_at < until)
        with self._tx(write=False) as s:
            field_, _, wanted = q.strip().partition(":") if q else ("", "", "")
            if q and field_.lower() in ERROR_FIELDS and wanted.strip():
                stmt = stmt.where(self._error_matches(field_.lower(), wanted.strip(), bool(status)))
            elif q:
                exact = self._exact(q)
                if re.match(r"^[A-Za-z_][\w-]*:\S", q.strip()):  # a search field, order_id:123: index only
                    name, value = (part.strip() for part in q.split(":", 1))
                    # ids first, then runs by primary key: a planner scanning runs newest-first while
                    # probing the subquery would read the whole table when nothing matches
                    ids = s.execute(select(RunIndexRow.run_id).where(RunIndexRow.name == name,
                                                                     RunIndexRow.value.in_(_probes(value)))
                                    .order_by(RunIndexRow.run_id.desc()).limit(10_000)).scalars().all()
                    stmt = stmt.where(RunRow.id.in_(list(ids)))
                elif s.execute(stmt.with_only_columns(RunRow.id).where(exact).limit(1)).first():
                    stmt = stmt.where(exact)
                else:  # text in the raw body, or in why the run failed
                    stmt = stmt.where(or_(self._body_contains(q),
                                          func.lower(RunRow.error).contains(q.strip().lower(), autoescape=True)))
            if cursor is not None:
                stmt = stmt.where(RunRow.id < cursor)
            if after is not None:
                stmt = stmt.where(RunRow.id > after)
            rows = s.execute(stmt.order_by(RunRow.id.desc()).limit(limit + 1)).scalars().all()
        runs = [_run_record(r) for r in rows[:limit]]
        return RunPage(runs, runs[-1].id if len(rows) > limit else None)

    @staticmethod
    def _exact(q: str) -> Any:
        """Index lookups: dedupe key, run id, ``name:value`` search field."""
        q = q.strip()
        conditions = [RunRow.dedupe_key == q]
        if q.isdigit() and len(q) < 19:
            conditions.append(RunRow.id == int(q))
        name, _, value = q.partition(":")
        if value.strip():  # never the "" markers of fields that resolved to nothing
            conditions.append(RunRow.id.in_(select(RunIndexRow.run_id).where(
                RunIndexRow.name == name.strip(), RunIndexRow.value.in_(_probes(value)))))
        return or_(*conditions)

    @staticmethod
    def _error_matches(field_: str, wanted: str, has_status: bool) -> Any:
        """``error:<text>`` (any case) in why a run failed or waits; ``code:<NNN>`` a response status a step
        got. Only failed and waiting runs carry one, so without a status filter the scan is limited to them
        (ix_runs_status_id), newest first, stopping at the page size."""
        text = wanted.lower() if field_ == "error" else f"answered {wanted}"
        match = or_(func.lower(RunRow.error).contains(text, autoescape=True),
                    func.lower(RunRow.reason).contains(text, autoescape=True))
        if has_status:
            return match
        return and_(RunRow.status.in_([RunStatus.FAILED.value, RunStatus.WAITING.value]), match)

    def _body_contains(self, q: str) -> Any:
        needle = q.strip().encode()
        if self.dialect == "postgresql":  # position(bytea IN bytea): works on non-UTF-8 bodies too
            body_match = func.position(literal(needle, LargeBinary).op("IN")(EventRow.body)) > 0
        else:
            body_match = func.instr(EventRow.body, needle) > 0
        return exists().where(EventRow.id == RunRow.event_id, body_match)

    def ids_matching(self, *, flow: str | None, status: str | None, since: float | None, until: float | None,
                     q: str | None = None, limit: int = 10_000) -> list[int]:
        """Run ids for a bulk action, oldest first."""
        ids: list[int] = []
        cursor = None
        while len(ids) < limit:
            page = self.list_runs(flow=flow, status=status, since=since, until=until, q=q, cursor=cursor, limit=500)
            ids.extend(r.id for r in page.runs)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return sorted(ids[:limit])

    def unfinished_counts(self) -> dict[str, int]:
        """Queued, running and waiting runs (uses the status index; terminal rows are not counted)."""
        unfinished = [RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.WAITING.value]
        with self._tx(write=False) as s:
            rows = s.execute(select(RunRow.status, func.count()).where(RunRow.status.in_(unfinished))
                             .group_by(RunRow.status)).all()
        return {status: 0 for status in unfinished} | {status: count for status, count in rows}

    def flow_stats(self, flow_ids: Sequence[str], since: float, bucket_s: float) -> dict[str, dict[str, Any]]:
        """Per flow: run counts by status and per ``bucket_s`` since ``since`` (``volume``), and its last failure.

        Every flow in ``flow_ids`` gets an entry; the last failure may be older than ``since``. One query
        serves the flows page and a single flow's page. Naming the flows (``flow_id IN``) lets SQLite read
        only the window, on ix_runs_flow_created: with ``created_at >= since`` alone its planner scans all of
        ix_runs_flow_status_id because that matches the GROUP BY (0.7-3 s at 1,000,000 runs). PostgreSQL
        reads the window on either index.
        """
        buckets = max(1, int((time.time() - since) // bucket_s) + 1)
        out: dict[str, dict[str, Any]] = {f: {"counts": {}, "volume": [0] * buckets, "last_failure": None}
                                          for f in flow_ids}
        bucket = func.floor((RunRow.created_at - since) / bucket_s).label("bucket")
        with self._tx(write=False) as s:
            rows = s.execute(
                select(RunRow.flow_id, RunRow.status, bucket, func.count())
                .where(RunRow.flow_id.in_(list(out)), RunRow.created_at >= since)
                # the bucket by name: PostgreSQL sees the expression's two binds as a different expression
                .group_by(RunRow.flow_id, RunRow.status, literal_column("bucket"))
            ).all()
            for flow_id, status, b, count in rows:
                counts, volume = out[flow_id]["counts"], out[flow_id]["volume"]
                counts[status] = counts.get(status, 0) + count
                if b is not None and 0 <= int(b) < buckets:
                    volume[int(b)] += count
            for flow_id in out:
                last = s.execute(
                    select(RunRow).where(RunRow.flow_id == flow_id, RunRow.status == RunStatus.FAILED.value)
                    .order_by(RunRow.id.desc()).limit(1)
                ).scalar()
                out[flow_id]["last_failure"] = _run_record(last) if last else None
        return out

    # --- the operator's view: reasons, resolution, per-step counts (web.context) ------------------

    @staticmethod
    def _no_child() -> Any:
        """A failed run nobody has replayed or retried yet: what the "unresolved failures" view lists."""
        child = aliased(RunRow)  # probed by ix_runs_parent: the comparison implies its IS NOT NULL
        return ~exists().where(child.parent_run_id == RunRow.id)

    def run_notes(self, run_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """For runs a page shows (at most a few hundred): the filter step that stopped each filtered run and
        each run's replay/retry children (id, status, kind). Two index lookups, whatever the table size."""
        ids = list(run_ids)[:1000]
        out: dict[int, dict[str, Any]] = {i: {"filtered_by": None, "children": []} for i in ids}
        if not ids:
            return out
        with self._tx(write=False) as s:
            for run_id, path in s.execute(select(StepRunRow.run_id, StepRunRow.path)
                                          .where(StepRunRow.run_id.in_(ids), StepRunRow.status == "filtered")):
                out[run_id]["filtered_by"] = path
            for parent, child, status, kind in s.execute(
                    select(RunRow.parent_run_id, RunRow.id, RunRow.status, RunRow.replay_kind)
                    .where(RunRow.parent_run_id.in_(ids)).order_by(RunRow.id)):
                if parent is not None:
                    out[parent]["children"].append({"id": child, "status": status, "replay_kind": kind})
        return out

    def unresolved_counts(self, flow_ids: Sequence[str], cap: int = 1000) -> dict[str, int]:
        """Per flow, failed runs with no replay or retry yet, counted up to ``cap`` (shown as "1,000+"):
        each count reads at most ``cap`` entries of ix_runs_flow_status_id."""
        out: dict[str, int] = {}
        with self._tx(write=False) as s:
            for flow_id in flow_ids:
                inner = (select(RunRow.id).where(RunRow.flow_id == flow_id, RunRow.status == RunStatus.FAILED.value,
                                                 self._no_child()).limit(cap).subquery())
                out[flow_id] = int(s.execute(select(func.count()).select_from(inner)).scalar() or 0)
        return out

    def step_stats(self, flow_id: str, since: float, max_runs: int) -> dict[str, tuple[int, int, dict[str, int]]]:
        """Per step path, over the newest ``max_runs`` runs of the flow created since ``since``: attempts that
        succeeded, attempts that failed for good (no retry scheduled), and those failures' messages (first 160
        characters) with counts. Bounded at any volume: the runs are a backward range of ix_runs_flow_created,
        their records come by step_runs' (run_id, path, attempt) index."""
        runs = (select(RunRow.id).where(RunRow.flow_id == flow_id, RunRow.created_at >= since)
                .order_by(RunRow.created_at.desc()).limit(max_runs).scalar_subquery())
        message = func.substr(StepRunRow.error_message, 1, 160).label("message")
        stmt = (select(StepRunRow.path, StepRunRow.status, message, func.count())
                .where(StepRunRow.run_id.in_(runs),
                       or_(StepRunRow.status == "succeeded",
                           and_(StepRunRow.status == "failed", StepRunRow.retry_at.is_(None))))
                .group_by(StepRunRow.path, StepRunRow.status, literal_column("message")))
        out: dict[str, tuple[int, int, dict[str, int]]] = {}
        with self._tx(write=False) as s:
            for path, status, text_, count in s.execute(stmt):
                ok, bad, errors = out.get(path, (0, 0, {}))
                if status == "succeeded":
                    ok += count
                else:
                    bad += count
                    errors[text_ or ""] = errors.get(text_ or "", 0) + count
                out[path] = (ok, bad, errors)
        return out

    def empty_keys(self, flow_id: str, since: float, *, dedupe: bool, index: Sequence[str],
                   cap: int = 1000) -> dict[str, Any]:
        """Runs of the flow created since ``since`` whose dedupe key, or an index field, resolved to nothing:
        ``{"dedupe": (count, first id) or None, "index": {name: (count, first id)}}``, counts up to ``cap``.

        The window starts at its oldest run's id (one probe of ix_runs_flow_created); then each count is
        one forward range of at most ``cap`` entries: runs without a key on uq_runs_flow_dedupe or
        ix_runs_flow_id_id, the ``""`` markers ingest stores for empty index fields on
        ix_run_index_name_value. A healthy flow reads no entries at all, whatever its volume.
        """
        out: dict[str, Any] = {"dedupe": None, "index": {}}
        with self._tx(write=False) as s:
            start = s.execute(select(RunRow.id).where(RunRow.flow_id == flow_id, RunRow.created_at >= since)
                              .order_by(RunRow.flow_id, RunRow.created_at).limit(1)).scalar()  # ix_runs_flow_created
            if start is None:
                return out | {"dedupe": (0, None) if dedupe else None, "index": {n: (0, None) for n in index}}

            def count(ids: Any) -> tuple[int, int | None]:
                sub = ids.limit(cap).subquery()
                n, first = s.execute(select(func.count(), func.min(sub.c.id))).one()
                return int(n or 0), first

            if dedupe:
                out["dedupe"] = count(select(RunRow.id).where(
                    RunRow.flow_id == flow_id, RunRow.dedupe_key.is_(None), RunRow.id >= start,
                    RunRow.created_at >= since).order_by(RunRow.id))
            # the run's flow as a correlated lookup, not a join: a join lets PostgreSQL's planner read all
            # of runs (merge or hash join); this is one primary-key probe per marker, at most ``cap``
            # plus the markers other flows' fields of that name left in the window
            flow_of = select(RunRow.flow_id).where(RunRow.id == RunIndexRow.run_id).scalar_subquery()
            for name in index:
                out["index"][name] = count(
                    select(RunIndexRow.run_id.label("id"))
                    .where(RunIndexRow.name == name, RunIndexRow.value == "", RunIndexRow.run_id >= start,
                           flow_of == flow_id).order_by(RunIndexRow.run_id))
        return out

    def runs_by_ids(self, ids: Sequence[int]) -> list[RunRecord]:
        """The given runs that exist, newest first: the UI refreshes the status of rows it already shows."""
        if not ids:
            return []
        with self._tx(write=False) as s:
            rows = s.execute(select(RunRow).where(RunRow.id.in_(list(ids))).order_by(RunRow.id.desc())).scalars()
            return [_run_record(r) for r in rows]
