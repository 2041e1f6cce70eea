"""Generated control flow under injected crashes: nested foreach/switch (depth <= 3, small lists), http steps
against a real target answering scripted 200 / 503 (retryable) / 409 (not), ``on_error: continue`` on some
steps, an ``on_failure`` handler, run through the Service on a real SQLite store and on PostgreSQL.

A crash is a store write that raises ``Crash`` (a BaseException: nothing in the process survives it), just
before the write is committed or just after; a fresh Service on the same database then resumes the run, as
a worker's reaper does once the dead worker's lease has expired (its clock is moved past the lease).

The oracles are the invariants, checked against what the target received and what the store recorded:
- I4: every run ends; after a crash the reaper finds every unfinished run, after draining all are terminal,
  with the status a small reference interpreter of the generated flow predicts.
- I6: every request of one path of one run carries ``idempotency_key(flow, run, path)``; a key maps to
  exactly one path of one run.
- I5: a path recorded succeeded is called no more (its success is the last attempt recorded).
- The calls a path received are exactly its recorded attempts, minus an attempt interrupted before its call
  (a crash right after its start was committed); the paths called are those the reference interpreter
  walks (items x branches taken), each called as often as it predicts.

18 examples per backend (~10 s each here); HOOKLINE_CF_EXAMPLES=200 for a longer hunt.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from engine.catalog import FlowCatalog
from engine.config import Settings
from engine.model import RunStatus
from engine.runner import idempotency_key
from engine.service import Service, make_http_client
from engine.store import RunStore
from tests.conftest import Queue
from tests.support import Target, start_target
from tests.test_service import accept, drain

FAST_RETRY = {"max_attempts": 3, "initial": "10ms", "max_delay": "20ms"}
MAX_ATTEMPTS = 3
# what the target answers a path's calls, in order, the last repeating
SCRIPTS = [(200,), (503, 200), (503, 503, 200), (503,), (409,), (503, 409)]
ALERT_SCRIPTS = [(200,), (503, 200)]
MAX_PATHS = 10  # http paths per run
PROPS = settings(max_examples=int(os.environ.get("HOOKLINE_CF_EXAMPLES", "18")), deadline=None, derandomize=True,
                 database=None, phases=[Phase.explicit, Phase.generate, Phase.shrink],
                 suppress_health_check=[HealthCheck.too_slow,
                                        HealthCheck.data_too_large])
EXAMPLE = itertools.count()


class Crash(BaseException):
    """The worker process died here: no handler in the runner or the service may see it."""


# --- the generated flow, and a reference interpreter of it ------------------------------------------------

@dataclass
class Node:
    kind: str  # http | fail | foreach | switch
    id: str
    cont: bool = False  # on_error: continue
    keyed: bool = False  # foreach with key: "{{ item.k }}"
    children: list[Node] = field(default_factory=list)  # foreach
    cases: list[list[Node]] = field(default_factory=list)  # switch: case i runs when c == i
    default: list[Node] | None = None


def steps_strategy(ids: Iterator[int], depth: int, max_len: int) -> st.SearchStrategy[list[Node]]:
    leaf = st.builds(lambda kind, cont: Node(kind, f"s{next(ids)}", cont),
                     st.sampled_from(["http", "http", "http", "fail"]), st.booleans())
    if depth >= 3:
        return st.lists(leaf, min_size=1, max_size=max_len)
    inner = steps_strategy(ids, depth + 1, 2)
    foreach = st.builds(lambda cont, keyed, children: Node("foreach", f"s{next(ids)}", cont, keyed, children),
                        st.booleans(), st.booleans(), inner)
    switch = st.builds(lambda cont, cases, default: Node("switch", f"s{next(ids)}", cont, cases=cases, default=default),
                       st.booleans(), st.lists(inner, min_size=1, max_size=2), st.none() | inner)
    return st.lists(st.one_of(leaf, leaf, foreach, switch), min_size=1, max_size=max_len)


def render(nodes: list[Node], url: str, in_item: bool) -> list[dict[str, Any]]:
    """The YAML steps of ``nodes``; an http step's URL names its path (the innermost item's unique ``k``)."""
    out: list[dict[str, Any]] = []
    for n in nodes:
        step: dict[str, Any] = {"id": n.id}
        if n.kind == "http":
            suffix = f"/{n.id}/{{{{ item.k }}}}" if in_item else f"/{n.id}"
            step["http"] = {"method": "POST", "url": url + "/r{{ run.id }}" + suffix, "json": {"step": n.id},
                            "retry": FAST_RETRY}
        elif n.kind == "fail":
            step["fail"] = f"{n.id} says no"
        elif n.kind == "foreach":
            step["foreach"] = f"{{{{ {'item' if in_item else 'event'}.{n.id} }}}}"
            if n.keyed:
                step["key"] = "{{ item.k }}"
            step["steps"] = render(n.children, url, True)
        else:
            var = "item" if in_item else "event"
            step["switch"] = {"cases": [{"when": f"{var}.c == {i}", "steps": render(c, url, in_item)}
                                        for i, c in enumerate(n.cases)]}
            if n.default is not None:
                step["switch"]["default"] = render(n.default, url, in_item)
        if n.cont:
            step["on_error"] = "continue"
        out.append(step)
    return out


def data_strategy(nodes: list[Node], ks: Iterator[int], depth: int) -> st.SearchStrategy[dict[str, Any]]:
    """An item (or the event): its unique ``k``, a case selector ``c``, a list for every foreach it feeds."""
    lists: dict[str, st.SearchStrategy[Any]] = {}

    def feeds(ns: list[Node]) -> Iterator[Node]:
        for n in ns:
            if n.kind == "foreach":
                yield n
            elif n.kind == "switch":
                for block in [*n.cases, *([n.default] if n.default is not None else [])]:
                    yield from feeds(block)

    for f in feeds(nodes):
        lists[f.id] = st.lists(data_strategy(f.children, ks, depth + 1), max_size=2)
    return st.fixed_dictionaries({"c": st.integers(0, 2), **lists}).map(lambda d: {"k": f"k{next(ks)}", **d})


class Failed(Exception):
    """The reference interpreter's run failure."""


@dataclass
class Model:
    """What one run should do: calls and attempts per http path, given the scripts and the crashes' interrupts."""

    scripts: dict[str, tuple[int, ...]]  # by url suffix
    interrupts: dict[tuple[str, int], bool]  # (path, attempt) -> whether its call was made
    calls: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)
    succeeded: set[str] = field(default_factory=set)
    suffix: dict[str, str] = field(default_factory=dict)  # path -> url suffix

    def http(self, path: str, suffix: str) -> None:
        self.suffix[path] = suffix
        script = self.scripts[suffix]
        attempt = 0
        while True:
            attempt += 1
            self.attempts[path] += 1
            if (path, attempt) in self.interrupts:  # an interrupted attempt counts as one (the store says so)
                self.calls[path] += self.interrupts[(path, attempt)]
                continue
            status = script[min(self.calls[path], len(script) - 1)]
            self.calls[path] += 1
            if status == 200:
                self.succeeded.add(path)
                return
            if status == 409 or attempt >= MAX_ATTEMPTS:
                raise Failed(path)

    def steps(self, nodes: list[Node], data: dict[str, Any], prefix: str, in_item: bool) -> None:
        for n in nodes:
            path = prefix + n.id
            try:
                if n.kind == "http":
                    self.http(path, f"/{n.id}/{data['k']}" if in_item else f"/{n.id}")
                elif n.kind == "fail":
                    raise Failed(path)
                elif n.kind == "foreach":
                    for i, item in enumerate(data[n.id]):
                        self.steps(n.children, item, f"{path}[{item['k'] if n.keyed else i}].", True)
                else:
                    c = data["c"]
                    if c < len(n.cases):
                        self.steps(n.cases[c], data, f"{path}.{c}.", in_item)
                    elif n.default is not None:
                        self.steps(n.default, data, f"{path}.default.", in_item)
            except Failed:
                if not n.cont:
                    raise

    def run(self, nodes: list[Node], event: dict[str, Any]) -> RunStatus:
        try:
            self.steps(nodes, event, "", False)
            return RunStatus.SUCCEEDED
        except Failed:
            try:
                self.http("on_failure.alert", "/alert")
            except Failed:
                pass
            return RunStatus.FAILED


def all_suffixes(nodes: list[Node], data: dict[str, Any], in_item: bool) -> Iterator[str]:
    """Every url suffix a run of ``data`` may call (whatever fails), to script them all."""
    for n in nodes:
        if n.kind == "http":
            yield f"/{n.id}/{data['k']}" if in_item else f"/{n.id}"
        elif n.kind == "foreach":
            for item in data[n.id]:
                yield from all_suffixes(n.children, item, True)
        elif n.kind == "switch":
            c = data["c"]
            block = n.cases[c] if c < len(n.cases) else n.default
            yield from all_suffixes(block or [], data, in_item)


@dataclass
class Scenario:
    nodes: list[Node]
    events: list[dict[str, Any]]
    scripts: list[dict[str, tuple[int, ...]]]  # per event, by url suffix
    crashes: list[tuple[int, bool]]  # per worker in turn: crash at its n-th write, after (True) or before it commits

    def __repr__(self) -> str:  # short: the failing assertion prints the flow and the events in full
        return f"Scenario({describe(self.nodes)}, {len(self.events)} events, crashes={self.crashes})"


def describe(nodes: list[Node]) -> str:
    parts = []
    for n in nodes:
        mark = "!" if n.cont else ""
        if n.kind == "foreach":
            parts.append(f"{n.id}{mark}:each[{describe(n.children)}]")
        elif n.kind == "switch":
            blocks = [describe(c) for c in n.cases] + ([f"else {describe(n.default)}"] if n.default else [])
            parts.append(f"{n.id}{mark}:switch[{' | '.join(blocks)}]")
        else:
            parts.append(f"{n.id}{mark}:{n.kind}")
    return ", ".join(parts)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    ids, ks = itertools.count(1), itertools.count(1)
    nodes = draw(steps_strategy(ids, 1, 3))
    events, scripts = [], []
    for _ in range(2):
        event = draw(data_strategy(nodes, ks, 0))
        suffixes = sorted(set(all_suffixes(nodes, event, False)))
        if len(suffixes) > MAX_PATHS:  # bounded: a second or two per example
            suffixes = suffixes[:MAX_PATHS]
            event = _prune(nodes, event, set(suffixes))
            suffixes = sorted(set(all_suffixes(nodes, event, False)))
        events.append(event)
        scripts.append({s: draw(st.sampled_from(SCRIPTS)) for s in suffixes}
                       | {"/alert": draw(st.sampled_from(ALERT_SCRIPTS))})
    crashes = draw(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=2))  # runs write 2-12 times
    return Scenario(nodes, events, scripts, crashes)


def _prune(nodes: list[Node], data: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    """Drop foreach items until every suffix called is in ``keep``."""
    data = dict(data)
    for n in nodes:
        if n.kind == "foreach":
            items = [_prune(n.children, item, keep) for item in data[n.id]]
            data[n.id] = [i for i in items if set(all_suffixes(n.children, i, True)) <= keep]
        elif n.kind == "switch":
            data = _prune([*itertools.chain(*n.cases), *(n.default or [])], data, keep)
    return data


# --- the system under test: services on one SQLite database, crashed and resumed ---------------------------

@dataclass
class Crasher:
    """Makes the writes of a worker's claims (engine.store.Claim: a call's start, the run's outcome) raise
    ``Crash`` at the n-th write (0-based), before or after it commits; after that every write raises (the
    process is dead). Records which attempts each crash interrupted: (run, path, attempt) -> whether the
    call had been made (a result lost with the write) or not (a start committed, the call never sent)."""

    at: int
    after: bool
    interrupts: dict[tuple[int, str, int], bool]
    writes: int = 0
    dead: bool = False

    def attach(self, claim: Any) -> Any:
        real_started, real_close = claim.step_started, claim.close

        def lost_results() -> None:
            for done in claim.completed:  # results of calls made, to be committed by this write
                self.interrupts[(claim.run.id, done.path, done.attempt)] = True

        def step_started(step: Any, path: str, attempt: int, started_at: float, idempotency_key: str) -> None:
            if self.hit():
                if self.after:
                    real_started(step, path, attempt, started_at, idempotency_key)
                    self.interrupts[(claim.run.id, path, attempt)] = False
                else:
                    lost_results()
                raise Crash()
            real_started(step, path, attempt, started_at, idempotency_key)

        def close(result: Any, now: float | None = None) -> None:
            if self.hit():
                if self.after:
                    real_close(result, now)
                else:
                    lost_results()
                raise Crash()
            real_close(result, now)

        claim.step_started, claim.close = step_started, close
        return claim

    def hit(self) -> bool:
        if self.dead:
            raise Crash()
        self.writes += 1
        if self.writes - 1 == self.at:
            self.dead = True
        return self.dead


def new_service(db_url: str, flows_dir: Path, queue: Queue, http: httpx.Client, crasher: Crasher | None,
                now_after: float | None = None) -> Service:
    """A worker process's Service; ``now_after``: its clock starts past that instant (a dead worker's lease)."""
    s = Settings(database_url=db_url, flows_dir=str(flows_dir), lease_s=0.2, queued_grace_s=1.0,
                 reaper_interval_s=0.1, http_timeout_s=5.0, breaker_failures=0)  # 503s are scripted, not an outage
    store = RunStore(db_url)
    store.create_all()
    real_claim = store.claim

    def claim(run_id: int, owner: str, lease_s: float, now: float | None = None, **kw: Any) -> Any:
        if now_after is not None:
            now = max(time.time(), now_after)
        taken = real_claim(run_id, owner, lease_s, now=now, **kw)
        return crasher.attach(taken) if taken is not None and crasher is not None else taken

    store.claim = claim  # type: ignore[method-assign]
    return Service(s, store, FlowCatalog(flows_dir), enqueue=queue, env={}, http=http)


@dataclass
class World:
    """What every example shares: one target (paths prefixed per example) and one outbound client (building
    one per Service costs ~0.2 s). Its repr is short: a failing example's report prints it."""

    target: Target
    http: httpx.Client
    pg: str | None = None  # the PostgreSQL server's URL, or None for SQLite

    def __repr__(self) -> str:
        return f"World({self.target.url}, {'postgres' if self.pg else 'sqlite'})"


@contextlib.contextmanager
def example_database(pg: str | None, tmp: str) -> Iterator[str]:
    """A database of its own for one example: a SQLite file in ``tmp``, or a fresh PostgreSQL schema."""
    if pg is None:
        yield f"sqlite:///{tmp}/hookline.db"
        return
    import sqlalchemy

    schema = f"hl_prop_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(pg, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(sqlalchemy.text(f"create schema {schema}"))
        yield f"{pg}{'&' if '?' in pg else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as c:
            c.execute(sqlalchemy.text(f"drop schema if exists {schema} cascade"))
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    """One target and client per backend; each example gets its own database (a file, or a PostgreSQL schema)."""
    pg = str(request.getfixturevalue("pg_base")) if request.param == "postgres" else None
    target = start_target()
    client = make_http_client(Settings(http_timeout_s=5.0))
    yield World(target, client, pg)
    client.close()
    target.server.shutdown()
    target.server.server_close()


@given(case=scenarios())
@PROPS
def test_generated_control_flow_keeps_the_invariants_through_crashes(world: World, case: Scenario) -> None:
    target, http = world.target, world.http
    n = next(EXAMPLE)
    base = f"{target.url}/x{n}"
    flow_text = yaml.safe_dump({"id": "gen", "trigger": {"dedupe": "$.id"}, "steps": render(case.nodes, base, False),
                                "on_failure": [{"id": "alert", "http": {
                                    "method": "POST", "url": base + "/r{{ run.id }}/alert",
                                    "json": {"failed": "{{ error.step }}"}, "retry": FAST_RETRY}}]}, sort_keys=False)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        flows_dir = Path(tmp) / "flows"
        flows_dir.mkdir()
        (flows_dir / "gen.yaml").write_text(flow_text)
        db_url = stack.enter_context(example_database(world.pg, tmp))
        interrupts: dict[tuple[int, str, int], bool] = {}
        crashes = [Crasher(at, after, interrupts) for at, after in case.crashes]
        queue = Queue()
        svc = new_service(db_url, flows_dir, queue, http, crashes[0] if crashes else None)
        run_ids = [int(accept(svc, {"id": f"e{i}", **ev}, "gen").run_id) for i, ev in enumerate(case.events)]
        for run_id, scripts in zip(run_ids, case.scripts, strict=True):
            for suffix, statuses in scripts.items():
                target.script[f"/x{n}/r{run_id}{suffix}"] = [(s, {"status": s}) for s in statuses]
        services = [svc]
        last_reap = 0.0
        try:
            for worker in itertools.count():
                try:
                    drain(svc, queue, limit=400)
                    break
                except Crash:
                    assert crashes[worker].dead
                # the next worker's reaper, once the dead worker's lease has expired
                records = [svc.store.get_run_record(r) for r in run_ids]
                unfinished = sorted(r.id for r in records if not r.status.terminal)
                expiry = max([time.time(), *(r.lease_expires_at or 0.0 for r in records)])
                last_reap = max(expiry + 3.0, last_reap + 3.0)
                queue = Queue()
                svc = new_service(db_url, flows_dir, queue, http, crashes[worker + 1] if worker + 1 < len(crashes)
                                  else None, now_after=last_reap)
                services.append(svc)
                assert svc.reap(now=last_reap) == unfinished, "I4: the reaper must find every unfinished run"
            note_event(f"workers crashed: {len(services) - 1}, attempts interrupted: {len(interrupts)}")
            check(svc.store, target, n, case, run_ids, interrupts, flow_text)
        finally:
            for s in services:
                s.store.dispose()


def check(store: RunStore, target: Target, n: int, case: Scenario, run_ids: list[int],
          interrupts: dict[tuple[int, str, int], bool], flow_text: str) -> None:
    key_owner: dict[str, tuple[int, str]] = {}
    for run_id, event, scripts in zip(run_ids, case.events, case.scripts, strict=True):
        model = Model(scripts, {(p, a): made for (r, p, a), made in interrupts.items() if r == run_id})
        expected = model.run(case.nodes, event)
        detail = store.get_run(run_id)
        where = f"run {run_id}\nflow:\n{flow_text}\nevent: {json.dumps(event)}\ninterrupts: {model.interrupts}"
        note_event(f"run {expected.value}, {sum(model.calls.values())} calls on {len(model.calls)} paths")
        assert detail.run.status is expected, f"I4: {detail.run.status} != {expected}: {detail.run.error}\n{where}"
        by_suffix = {s: p for p, s in model.suffix.items()}
        prefix = f"/x{n}/r{run_id}"
        calls: dict[str, list[Any]] = defaultdict(list)
        for req in target.requests():
            if req.path.startswith(prefix + "/"):
                suffix = req.path[len(prefix):]
                assert suffix in by_suffix, f"a call the flow should not make: {req.path}\n{where}"
                calls[by_suffix[suffix]].append(req)
        rows: dict[str, list[Any]] = defaultdict(list)
        for s in detail.steps:
            if s.idempotency_key is not None:
                rows[s.path].append(s)
        assert set(rows) == {p for p, a in model.attempts.items() if a}, f"paths recorded\n{where}"
        interrupted = {(s.path, s.attempt) for s in detail.steps if s.error_type == "Interrupted"}
        assert interrupted == set(model.interrupts), f"I4: attempts taken over from the dead workers\n{where}"
        for path, reqs in calls.items():
            key = idempotency_key("gen", run_id, path)
            keys = {r.headers.get("idempotency-key") for r in reqs}
            assert keys == {key}, f"I6: {path} sent keys {keys}, not {key}\n{where}"
            assert key_owner.setdefault(key, (run_id, path)) == (run_id, path), f"I6: key {key} shared\n{where}"
            assert {r.idempotency_key for r in rows[path]} == {key}, f"I6: {path} recorded another key\n{where}"
        for path, attempts in model.attempts.items():
            recorded = rows[path]
            made = calls.get(path, [])
            assert [r.attempt for r in recorded] == list(range(1, attempts + 1)), (
                f"{path}: attempts {[r.attempt for r in recorded]}, expected {attempts}\n{where}")
            no_call = sum(1 for (p, _a), had in model.interrupts.items() if p == path and not had)
            assert len(made) == len(recorded) - no_call == model.calls[path], (
                f"{path}: {len(made)} calls, {len(recorded)} attempts recorded ({no_call} interrupted before the call),"
                f" {model.calls[path]} predicted\n{where}")
            succeeded = [r for r in recorded if r.status.value == "succeeded"]
            if path in model.succeeded:
                assert len(succeeded) == 1 and recorded[-1] is succeeded[0], f"I5: {path} after its success\n{where}"
            else:
                assert succeeded == [], f"{path} succeeded against a script that never lets it\n{where}"
