"""engine.versions: what a retry on another flow version may keep, and the side-by-side diff rows."""

from __future__ import annotations

from engine.loader import load_flow
from engine.versions import Compatibility, line_diff, shape, version_change

BASE = """\
id: shop
defaults:
  http: {timeout: 5s}
steps:
  - id: shape
    transform: {total: "{{ event.total }}"}
  - id: lines
    foreach: $.items
    key: "{{ item.sku }}"
    steps:
      - id: reserve
        http: {url: "https://stock.test/{{ item.sku }}"}
  - id: route
    switch:
      cases:
        - when: event.paid
          steps:
            - id: invoice
              http: {url: "https://ledger.test/invoices"}
  - id: notify
    description: tell the CRM
    http: {url: "https://crm.test/notify"}
"""


def compat(new: str) -> Compatibility:
    return Compatibility(load_flow(BASE, "shop.yaml"), load_flow(new, "shop.yaml"))


def test_paths_keep_their_shape_without_item_keys() -> None:
    assert shape("lines[sku-1].reserve") == "lines[*].reserve"
    assert shape("lines[a%5Bb%5D].reserve") == "lines[*].reserve"
    assert shape("route.0.invoice") == "route.0.invoice"


def test_the_same_definition_is_kept_whatever_moved_around_it() -> None:
    # a comment, a description, a new step at the end and shifted lines change no definition
    c = compat(BASE.replace("tell the CRM", "tell the CRM (v2)").replace("id: shop\n", "id: shop\n# v2\n")
               + "  - id: audit\n    http: {url: \"https://audit.test\"}\n")
    assert all(c.keeps(p) for p in ("shape", "lines[sku-1].reserve", "route.0.invoice", "notify"))
    assert c.conflict("notify") is None


def test_a_changed_call_conflicts_and_a_changed_pure_step_is_recomputed() -> None:
    c = compat(BASE.replace("crm.test/notify", "crm.test/v2/notify").replace("event.total", "event.total * 100"))
    assert not c.keeps("notify")
    assert c.conflict("notify") == "step notify already succeeded and changed in the current version"
    assert not c.keeps("shape") and c.conflict("shape") is None  # pure: computed again, never sent


def test_defaults_are_part_of_a_calls_definition() -> None:
    c = compat(BASE.replace("timeout: 5s", "timeout: 30s"))
    assert c.conflict("notify") is not None and c.conflict("lines[sku-1].reserve") is not None


def test_a_moved_call_or_a_changed_container_conflicts() -> None:
    refund = ("        - when: event.refunded\n          steps:\n            - id: refund\n"
              "              http: {url: \"https://ledger.test/refunds\"}\n")
    moved = BASE.replace("        - when: event.paid", refund + "        - when: event.paid")
    assert compat(moved).conflict("route.0.invoice") == (
        "step route.0.invoice already succeeded and moved in the current version (route.1.invoice)")
    rekeyed = compat(BASE.replace('key: "{{ item.sku }}"', 'key: "{{ item.id }}"'))
    assert rekeyed.conflict("lines[sku-1].reserve") == (
        "step lines[sku-1].reserve already succeeded and changed in the current version (its container lines changed)")
    assert rekeyed.keeps("notify")


def test_a_removed_call_is_dropped_without_conflict() -> None:
    start, end = BASE.index("  - id: notify"), len(BASE)
    c = compat(BASE[:start] + BASE[end:])
    assert not c.keeps("notify") and c.conflict("notify") is None


def test_diff_rows_mark_changes_and_fold_unchanged_runs() -> None:
    old = "\n".join(f"line {i}" for i in range(1, 21))
    new = old.replace("line 10", "line ten").replace("line 20", "line 20\nline 21")
    rows = line_diff(old, new)
    assert rows[0] == {"tag": "fold", "old": None, "new": None, "lines": 6}
    assert [r["tag"] for r in rows[1:4]] == ["equal"] * 3
    assert rows[4] == {"tag": "changed", "old": [10, "line 10"], "new": [10, "line ten"]}
    assert rows[-1] == {"tag": "added", "old": None, "new": [21, "line 21"]}
    assert any(r["tag"] == "fold" and r["lines"] == 4 for r in rows[5:])  # 11-20 less 3 each side
    same = version_change("v1", "v1", {"v1": old})
    assert same == {"original": "v1", "current": "v1", "changed": False, "diff": []}
    assert version_change("v1", None, {})["changed"] is False  # the flow is not loaded: nothing to compare


CALL_WITH_ITEMS = """\
id: shop
steps:
  - id: notify
    http:
      url: https://crm.test/notify
      json:
        lines: [{id: "sku-1", qty: 1}]
        steps: [{id: "after", http: {url: "x"}}]
  - id: after
    transform: {a: 1}
"""


def test_a_call_whose_body_lists_items_with_ids_is_compared_whole() -> None:
    """A body's ``[{id: ...}]`` items are data, not steps: changing one changes the call, and an item
    named like a step (even under a ``steps`` key) does not stand in for that step's definition."""
    old = load_flow(CALL_WITH_ITEMS, "shop.yaml")
    c = Compatibility(old, load_flow(CALL_WITH_ITEMS.replace("qty: 1", "qty: 2"), "shop.yaml"))
    assert not c.keeps("notify")
    assert c.conflict("notify") == "step notify already succeeded and changed in the current version"
    assert c.keeps("after")
    c = Compatibility(old, load_flow(CALL_WITH_ITEMS.replace("{a: 1}", "{a: 2}"), "shop.yaml"))
    assert not c.keeps("after") and c.keeps("notify")
    c = Compatibility(old, load_flow(CALL_WITH_ITEMS.replace('url: "x"', 'url: "y"'), "shop.yaml"))
    assert not c.keeps("notify") and c.keeps("after")


def test_a_switch_default_block_is_compared_step_by_step() -> None:
    flow = """\
id: shop
steps:
  - id: route
    switch:
      cases:
        - when: event.paid
          steps:
            - id: invoice
              http: {url: "https://ledger.test/invoices"}
      default:
        - id: remind
          http: {url: "https://crm.test/remind"}
"""
    c = Compatibility(load_flow(flow, "s.yaml"), load_flow(flow.replace("crm.test/remind", "crm.test/v2"), "s.yaml"))
    assert c.keeps("route.0.invoice") and c.keeps("route")
    assert not c.keeps("route.default.remind")
    assert c.conflict("route.default.remind") == ("step route.default.remind already succeeded and changed in the "
                                                  "current version")


def test_a_renamed_call_conflicts_instead_of_being_sent_again() -> None:
    c = compat(BASE.replace("- id: notify", "- id: tell_crm"))
    assert c.conflict("notify") == "step notify already succeeded and is tell_crm in the current version (renamed)"
    c = compat(BASE.replace("- id: notify\n    description: tell the CRM\n    http: {url: \"https://crm.test/notify\"}",
                            "- id: tell_crm\n    http: {url: \"https://crm.test/v2\"}"))
    assert c.conflict("notify") is None  # a different call: the old one was removed, the new one runs
