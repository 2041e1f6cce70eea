"""Index values: ``lower: true`` fields stored folded and searched in any case, on the index; the markers
of fields (and dedupe keys) that resolved to nothing, counted per flow on indexes (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from engine.loader import load_flow
from engine.store import RunStore
from tests.support import selects

FLOW = """\
id: shop
trigger:
  dedupe: $.id
  index:
    order_id: $.order
    email: {path: $.customer.email, lower: true}
steps:
  - id: t
    transform: {x: 1}
"""


def accept(store: RunStore, body: dict[str, Any], flow_src: str = FLOW, now: float | None = None) -> int:
    """What Service.accept_event stores for this body (its extraction, without the queue)."""
    flow = load_flow(flow_src, "shop.yaml")
    trig = flow.trigger
    index = {n: v for n, e in trig.index.items() if (v := e.extract(body, {})) is not None}
    dedupe = trig.dedupe.extract(body, {}) if trig.dedupe else None
    return store.accept(flow_id=flow.id, version=flow.version, source=flow.source, path="shop.yaml", method="POST",
                        query="", headers=[], body=json.dumps(body).encode(), content_type="application/json",
                        dedupe_key=dedupe, index=index, now=now).run_id


def plans(store: RunStore, call: Callable[[], Any]) -> str:
    """EXPLAIN (PostgreSQL) / EXPLAIN QUERY PLAN (SQLite) of every SELECT ``call`` makes, joined."""
    seen = selects(store, call)
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        out = []
        for sql, params in seen:
            if store.dialect == "sqlite":
                out.append(" | ".join(r[3] for r in cur.execute("EXPLAIN QUERY PLAN " + sql, params)))
            else:
                cur.execute("SET enable_seqscan = off")  # a tiny table: make the planner show what it can use
                cur.execute("EXPLAIN " + sql, params)
                out.append(" | ".join(r[0] for r in cur.fetchall()))
        return "\n".join(out)
    finally:
        raw.close()


def test_lower_fields_are_stored_folded_and_found_whatever_the_case(store: RunStore) -> None:
    grace = accept(store, {"id": "e1", "order": "A-1", "customer": {"email": "  Grace@Example.COM "}})
    accept(store, {"id": "e2", "order": "a-1", "customer": {"email": "ada@example.com"}})
    assert store.get_run(grace).index == {"order_id": "A-1", "email": "grace@example.com"}  # type: ignore[union-attr]
    for q in ("email:grace@example.com", "email:Grace@Example.com", "email: GRACE@EXAMPLE.COM"):
        assert [r.id for r in store.list_runs(q=q).runs] == [grace], q
    # a field without lower: true keeps the case it was sent in: only the folded probe of a search
    # can match it, so a value stored in lower case is found by any case, others by their exact value
    second = grace + 1
    assert [r.id for r in store.list_runs(q="order_id:A-1").runs] == [second, grace]
    assert [r.id for r in store.list_runs(q="order_id:a-1").runs] == [second]


def test_runs_stored_before_lower_was_declared_are_found_by_their_exact_value(store: RunStore) -> None:
    old = accept(store, {"id": "e1", "customer": {"email": "Grace@Example.com"}},
                 FLOW.replace("{path: $.customer.email, lower: true}", "$.customer.email"))
    new = accept(store, {"id": "e2", "customer": {"email": "Grace@Example.com"}})
    assert [r.id for r in store.list_runs(q="email:Grace@Example.com").runs] == [new, old]
    assert [r.id for r in store.list_runs(q="email:grace@example.com").runs] == [new]


def test_a_search_is_served_by_the_index_not_a_scan_of_runs(store: RunStore) -> None:
    for i in range(30):
        accept(store, {"id": f"e{i}", "order": str(i), "customer": {"email": f"C{i}@Example.com"}})
    plan = plans(store, lambda: store.list_runs(q="email:C7@example.com"))
    assert "ix_run_index_name_value" in plan, plan
    plan += plans(store, lambda: store.list_runs(q="email:C7@example.com", flow="shop"))
    assert "SCAN runs" not in plan and "Seq Scan on runs" not in plan, plan


def test_empty_dedupe_keys_and_index_fields_are_counted_with_the_first_run(store: RunStore) -> None:
    now = time.time()
    accept(store, {"order": "old", "customer": {}}, now=now - 2 * 86400)  # outside the window
    ok = accept(store, {"id": "e1", "order": "1", "customer": {"email": "a@b.test"}}, now=now - 60)
    first = accept(store, {"order": "2", "customer": {"email": "  "}}, now=now - 50)  # no id; blank email
    accept(store, {"order": "3"}, now=now - 40)  # no id, no email
    accept(store, {"id": "e4", "customer": {"email": "c@d.test"}}, now=now - 30)  # no order
    assert store.get_run(first).index == {"order_id": "2"}  # type: ignore[union-attr]  # markers are not values
    assert first not in [r.id for r in store.list_runs(q="email:").runs]  # never the markers
    assert not [r for r in store.list_runs(q="shop").runs if r.id == first]
    got = store.empty_keys("shop", now - 86400, dedupe=True, index=["order_id", "email"])
    assert got == {"dedupe": (2, first), "index": {"order_id": (1, first + 2), "email": (2, first)}}, (got, ok)
    assert store.empty_keys("shop", now - 86400, dedupe=True, index=["email"], cap=1)["index"]["email"] == (1, first)
    assert store.empty_keys("other", now - 86400, dedupe=True, index=["email"]) == {
        "dedupe": (0, None), "index": {"email": (0, None)}}
    plan = plans(store, lambda: store.empty_keys("shop", now - 86400, dedupe=True, index=["email"]))
    assert "SCAN runs" not in plan and "Seq Scan on runs" not in plan and "SCAN run_index" not in plan, plan


@pytest.mark.parametrize("doc, message", [
    ("{lower: true}", "an index field needs a path"),
    ("{path: $.a, lower: yes please}", "lower must be true or false"),
    ("{path: $.a, case: lower}", "unknown key 'case'"),
    ("{path: nope}", "expected a JSONPath"),
])
def test_bad_index_entries_are_named_at_their_line(doc: str, message: str) -> None:
    from engine.errors import FlowInvalid

    with pytest.raises(FlowInvalid) as exc:
        load_flow(f"id: a\ntrigger:\n  index:\n    email: {doc}\nsteps:\n  - id: t\n    transform: {{x: 1}}\n", "a.yaml")
    assert any(message in str(e) and e.line == 4 for e in exc.value.errors), [str(e) for e in exc.value.errors]


def test_header_fields_fold_too_and_dedupe_keys_never_do() -> None:
    flow = load_flow("id: a\ntrigger:\n  dedupe: header:X-Id\n  index:\n    user: {path: 'header:X-User', lower: true}\n"
                     "steps:\n  - id: t\n    transform: {x: 1}\n", "a.yaml")
    assert flow.trigger.index["user"].extract({}, {"x-user": " Straße "}) == "strasse"
    assert flow.trigger.index["user"].extract({}, {"x-user": "   "}) == ""  # the marker of an empty field
    assert flow.trigger.index["user"].extract({}, {}) == ""
    assert flow.trigger.dedupe is not None and flow.trigger.dedupe.extract({}, {"x-id": "AbC"}) == "AbC"
    assert flow.trigger.dedupe.extract({}, {}) is None  # events without a key are never duplicates
