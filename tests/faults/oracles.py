"""The checks every fault test shares: nothing lost (I1, I4), nothing doubled beyond the documented
at-least-once step (I5, I6), no secret anywhere (I9); and the figures each test prints."""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy

from engine.store import RunStore
from tests.faults.infra import TERMINAL, EventStream, all_runs
from tests.support import Target, wait_for


def wait_all_terminal(store: RunStore, run_ids: list[int], timeout: float, what: str = "") -> dict[int, str]:
    """Poll until every run is terminal; returns id -> status (fails with the stragglers listed)."""
    statuses: dict[int, str] = {}

    def check() -> bool:
        statuses.clear()
        for r in all_runs(store):
            statuses[r.id] = r.status.value
        return all(statuses.get(i) in TERMINAL for i in run_ids)

    try:
        wait_for(check, timeout=timeout, interval=0.2, what="every accepted run to end")
    except AssertionError:
        stuck = {i: statuses.get(i, "missing") for i in run_ids if statuses.get(i) not in TERMINAL}
        raise AssertionError(f"{len(stuck)} run(s) did not end: {dict(list(stuck.items())[:20])}\n{what}") from None
    return statuses


@dataclass
class SideEffects:
    """What the target received per (step path, event ref), checked against the runs' step records."""

    calls: int = 0
    truncated: int = 0  # requests cut off mid-body by a kill: no server would act on them
    duplicates: int = 0  # calls beyond the first for one (step, event)
    allowed_duplicates: int = 0  # repeats of an attempt that was interrupted or failed (documented at-least-once)
    problems: list[str] = field(default_factory=list)


def check_side_effects(target: Target, store: RunStore, runs_by_ref: dict[str, int], paths: dict[str, str]) -> SideEffects:
    """Each succeeded http step reached the target at least once per event; never more calls than recorded
    attempts (a repeat is the documented at-least-once of an interrupted or failed attempt), always with
    that step's one Idempotency-Key; keys never shared across steps or runs (I5, I6).

    ``paths`` maps target path -> step id; requests carry ``{"ref": <event id>}`` in their JSON body."""
    fx = SideEffects()
    seen: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for req in target.requests():
        if req.path not in paths:
            continue
        if len(req.body) < int(req.headers.get("content-length") or 0):
            fx.truncated += 1
            continue
        ref = req.json().get("ref")
        if ref not in runs_by_ref:
            continue  # a warm-up event, say
        seen[(req.path, ref)].append(req)
        fx.calls += 1
    key_owner: dict[str, tuple[str, str]] = {}
    for ref, run_id in runs_by_ref.items():
        detail = store.get_run(run_id)
        assert detail is not None, f"run {run_id} vanished"
        for path, step_id in paths.items():
            rows = [s for s in detail.steps if s.path == step_id]
            got = seen.get((path, ref), [])
            succeeded = [s for s in rows if s.status.value == "succeeded"]
            interrupted = [s for s in rows if s.error_type == "Interrupted"]
            if detail.run.status.value == "succeeded" and len(succeeded) != 1:
                fx.problems.append(f"run {run_id} step {step_id}: {len(succeeded)} succeeded attempts (I5)")
            if succeeded and not got:
                fx.problems.append(f"run {run_id} step {step_id} succeeded but the target never saw it")
            extra = max(0, len(got) - 1)
            fx.duplicates += extra
            if len(got) > len(rows):
                fx.problems.append(f"run {run_id} step {step_id}: {len(got)} calls but {len(rows)} recorded attempts "
                                   f"({len(interrupted)} interrupted): a side effect no attempt accounts for")
            elif extra:
                fx.allowed_duplicates += extra
            keys = {r.headers.get("idempotency-key") for r in got}
            if len(keys) > 1:
                fx.problems.append(f"run {run_id} step {step_id}: {len(keys)} different Idempotency-Keys (I6)")
            for k in keys:
                if k is None:
                    fx.problems.append(f"run {run_id} step {step_id}: a call without Idempotency-Key")
                elif key_owner.setdefault(k, (ref, path)) != (ref, path):
                    fx.problems.append(f"Idempotency-Key {k} shared by {key_owner[k]} and {(ref, path)} (I6)")
    return fx


def check_stored(store: RunStore, stream: EventStream) -> list[str]:
    """I1: every 2xx answer names a committed run whose stored raw body is byte-identical to what was sent."""
    problems = []
    for d in stream.accepted:
        detail = store.get_run(d.run_id) if d.run_id is not None else None
        if detail is None:
            problems.append(f"event {d.index} got 2xx with run {d.run_id}, which is not stored")
        elif detail.event.body != d.body:
            problems.append(f"event {d.index}: stored body differs from the one sent")
    ids = [d.run_id for d in stream.accepted]
    if len(set(ids)) != len(ids):
        problems.append("two different events were answered with the same run id")
    return problems


def reenqueued(logs: str) -> int:
    """Messages the reapers sent again, from their ``reaper re-enqueued N run(s)`` log lines."""
    return sum(int(n) for n in re.findall(r"reaper re-enqueued (\d+) run", logs))


def figures(name: str, record: Callable[[str, Any], None] | None = None, **values: Any) -> str:
    """Print one line of figures (``pytest -s`` shows it; docs/reliability.md copies it) and record them."""
    parts = [f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()]
    line = f"FIGURES {name}: " + " ".join(parts)
    print("\n" + line)
    if record is not None:
        for k, v in values.items():
            record(k, v)
    report = os.environ.get("HOOKLINE_FAULT_FIGURES")
    if report:
        with open(report, "a") as fh:
            fh.write(json.dumps({"test": name, **values}, default=str) + "\n")
    return line


def string_leaves(value: Any) -> Iterator[str]:
    """Every string inside a JSON value, keys included (a secret escaped once by a JSON encoder shows here)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from string_leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from string_leaves(v)


def dump_database(url: str) -> Iterator[tuple[str, str, str]]:
    """(table, column, text) for every non-null cell of every table; bytes decoded (UTF-8, and latin-1)."""
    engine = sqlalchemy.create_engine(url)
    try:
        meta = sqlalchemy.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                for row in conn.execute(sqlalchemy.select(table)).mappings():
                    for column, value in row.items():
                        if value is None:
                            continue
                        if isinstance(value, bytes | bytearray | memoryview):
                            raw = bytes(value)
                            yield table.name, column, raw.decode("utf-8", "replace")
                            yield table.name, column, raw.decode("latin-1")
                        elif isinstance(value, dict | list):
                            yield table.name, column, json.dumps(value, ensure_ascii=False)
                            for leaf in string_leaves(value):
                                yield table.name, column, leaf
                        else:
                            yield table.name, column, str(value)
    finally:
        engine.dispose()
