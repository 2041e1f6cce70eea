"""`hookline test` fixtures address steps by path: a stub keyed by a path applies to that foreach item only,
one keyed by a step id to every item; ``expect.steps`` reads paths and a foreach container's list of outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from engine.flowtest import run_fixture
from tests.conftest import make_flow

LINES = [{"sku": f"sku-{i}", "quantity": i} for i in range(1, 4)]


def lines_flow() -> Any:
    decrement = {"id": "decrement", "on_error": "continue", "http": {
        "method": "POST", "url": "https://inventory.test/decrement",
        "json": {"sku": "{{ item.sku }}", "qty": "{{ item.quantity }}"}}}
    return make_flow([{"id": "lines", "foreach": "$.line_items", "steps": [decrement]},
                      {"id": "summary", "transform": {"failed": "{{ steps.lines | selectattr('error') | list | length }}"}}],
                     id="lines_flow")


def fixture(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "fixture.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


STUBS = {"decrement": {"status": 200, "json": {"left": 5}},
         "lines[1].decrement": {"status": 409, "json": {"error": "out of stock"}}}


def test_a_path_stub_applies_to_its_item_and_a_step_id_stub_to_every_other(tmp_path: Path) -> None:
    res = run_fixture(lines_flow(), fixture(tmp_path, {"event": {"line_items": LINES}, "stubs": STUBS, "expect": {
        "status": "succeeded",
        "steps": {
            "lines[0].decrement": {"status": "succeeded", "request": {"json": {"sku": "sku-1", "qty": 1}}},
            "lines[1].decrement": {"status": "failed", "error": "~409"},
            "lines[2].decrement": {"status": "succeeded", "output": {"response": {"json": {"left": 5}}}},
            "lines": {"output": [{"response": {"status": 200}}, {"error": {"status": 409}},
                                 {"response": {"status": 200}}]},
            "summary": {"output": {"failed": 1}},
        }}}))
    assert res.problems == []
    assert [s.path for s in res.result.steps if s.path.startswith("lines[")] == [
        "lines[0].decrement", "lines[1].decrement", "lines[2].decrement"]


def test_expectations_by_path_fail_when_that_item_differs(tmp_path: Path) -> None:
    res = run_fixture(lines_flow(), fixture(tmp_path, {"event": {"line_items": LINES}, "stubs": STUBS, "expect": {
        "steps": {"lines[1].decrement": {"status": "succeeded"},
                  "lines[7].decrement": {"status": "succeeded"},
                  "lines": {"output": [{"response": {"status": 200}}] * 3}}}}))
    assert res.problems[0] == "steps.lines[1].decrement.status: expected \"succeeded\", got \"failed\""
    assert "steps.lines[7].decrement: did not run" in res.problems
    assert any(p.startswith("steps.lines.output[1]") for p in res.problems), res.problems


def test_a_stub_for_a_path_of_no_step_is_named(tmp_path: Path) -> None:
    res = run_fixture(lines_flow(), fixture(tmp_path, {"event": {"line_items": LINES}, "stubs": {
        **STUBS, "lines[0].nope": {"status": 200}}, "expect": {"status": "succeeded"}}))
    assert res.problems == [f"{tmp_path / 'fixture.yaml'}: stubs.lines[0].nope: flow lines_flow has no step 'nope'"]
