from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import FlowInvalid
from engine.loader import load_flow, load_flow_file, missing_env_vars
from engine.templating import RenderContext

ROOT = Path(__file__).resolve().parent.parent


def problems(text: str) -> list[str]:
    with pytest.raises(FlowInvalid) as info:
        load_flow(text, "flows/bad.yaml")
    return [str(e) for e in info.value.errors]


def test_issue_example_loads_as_written() -> None:
    flow = load_flow_file(ROOT / "flows" / "stripe_payment_sync.yaml")
    assert flow.id == "stripe_payment_sync"
    assert [s.id for s in flow.steps] == ["succeeded_only", "payment", "lookup", "contact", "invoice"]
    assert [s.type for s in flow.steps] == ["filter", "transform", "http", "switch", "http"]
    assert [s.id for s in flow.on_failure] == ["alert"]
    http = flow.step("create_contact").config  # nested in the switch; its timeout and retry merged from x-crm
    assert http.timeout == 10 and http.retry.max_attempts == 6 and http.retry.initial == 2 and http.retry.max_delay == 600
    assert flow.trigger.verify is not None and flow.trigger.verify.provider == "stripe"
    assert flow.trigger.dedupe is not None and flow.trigger.dedupe.source == "$.id"
    assert len(flow.version) == 16


def test_id_defaults_to_file_name() -> None:
    flow = load_flow("steps:\n  - id: a\n    transform: {x: 1}\n", "flows/orders.yaml")
    assert flow.id == "orders"


def test_every_problem_of_a_file_is_reported_with_line_and_path() -> None:
    text = """\
id: bad
trigger:
  verify: {provider: strpe}
  dedupe: id
  colour: blue
steps:
  - id: a
    transform:
      x: "{{ steps.b.y }}"
  - id: b
    http:
      url: "{{ event.url "
      metod: POST
      timeout: soon
  - id: a
    filter: "$.items[?("
  - id: c
    transform: {y: "$.items[?("}
"""
    found = problems(text)
    joined = "\n".join(found)
    assert "flows/bad.yaml:3: trigger.verify.provider: unknown verify provider 'strpe'" in joined
    assert "flows/bad.yaml:4: trigger.dedupe: invalid key expression" in joined
    assert "flows/bad.yaml:5: trigger.colour: unknown key 'colour'" in joined
    assert "flows/bad.yaml:9: steps[0].transform.x: steps.b is not available yet" in joined
    assert "flows/bad.yaml:12: steps[1].http.url: Jinja syntax error" in joined
    assert "flows/bad.yaml:13: steps[1].http.metod: unknown key 'metod'" in joined
    assert "flows/bad.yaml:14: steps[1].http.timeout: expected a duration" in joined
    assert "flows/bad.yaml:15: steps[2].id: duplicate step id 'a'" in joined
    assert "flows/bad.yaml:18: steps[3].transform.y: invalid JSONPath" in joined
    assert all(line.startswith("flows/bad.yaml:") for line in found)


@pytest.mark.parametrize(("text", "expected"), [
    ("steps: [", "flows/bad.yaml:1: YAML syntax error"),
    ("- just\n- a list\n", "a flow must be a mapping"),
    ("name: x\n", "a flow needs `steps:`"),
    ("steps:\n  - transform: {a: 1}\n", "flows/bad.yaml:2: steps[0].id: every step needs an `id`"),
    ("steps:\n  - id: a\n    frobnicate: 1\n", "unknown key 'frobnicate'"),
    ("steps:\n  - id: a\n    transform: {}\n    filter: 'true'\n", "several step types"),
    ("steps:\n  - id: a\n    http: {method: POST}\n", "steps[0].http.url: url is required"),
    ("steps:\n  - id: a\n    http: {url: 'http://x', method: FETCH}\n", "expected one of GET"),
    ("steps:\n  - id: a\n    http: {url: 'http://x', retry: {max_attempts: 0}}\n", "steps[0].http.retry.max_attempts"),
    ("steps:\n  - id: a\n    transform: {x: '{{ steps.zz.y }}'}\n", "unknown step 'zz'"),
    ("steps:\n  - id: a\n    transform: {x: 1, x: 2}\n", "duplicate key 'x'"),
    ("steps:\n  - id: a\n    http: {url: 'http://x', json: {}, body: 'x'}\n", "use only one of json, form and body"),
    ("steps:\n  - id: a\n    http: {url: 5}\n", "url must be an absolute http(s) URL"),
    ("steps:\n  - id: a\n    http: {url: 'ftp://x/y'}\n", "url must be an absolute http(s) URL"),
    ("id: 'has space'\nsteps:\n  - id: a\n    transform: 1\n", "id must be letters"),
])
def test_single_problems(text: str, expected: str) -> None:
    assert any(expected in p for p in problems(text)), problems(text)


def test_binary_and_unreadable_files(tmp_path: Path) -> None:
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(FlowInvalid, match="not a UTF-8 text file"):
        load_flow_file(p)
    with pytest.raises(FlowInvalid, match="cannot read"):
        load_flow_file(tmp_path / "missing.yaml")


def test_missing_env_vars_are_named() -> None:
    flow = load_flow_file(ROOT / "flows" / "stripe_payment_sync.yaml")
    assert missing_env_vars(flow, {}) == ["STRIPE_WEBHOOK_SECRET"]
    assert missing_env_vars(flow, {"STRIPE_WEBHOOK_SECRET": "whsec_x"}) == []


def test_version_is_the_content_hash() -> None:
    a = load_flow("steps:\n  - id: a\n    transform: 1\n", "x.yaml")
    b = load_flow("steps:\n  - id: a\n    transform: 2\n", "x.yaml")
    assert a.version != b.version and a.version == load_flow(a.source, "y.yaml").version


def test_yaml_merge_keys_let_a_step_override_what_it_merged() -> None:
    text = """
x-decrement: &decrement
  method: POST
  url: https://inventory.test/decrement
  json: {sku: base}
steps:
  - id: a
    http: {<<: *decrement, json: {sku: "{{ event.sku }}"}}
  - id: b
    http:
      <<: *decrement
"""
    flow = load_flow(text, "merge.yaml")  # top-level x-* keys hold anchors
    a, b = flow.steps
    assert a.config.method == "POST" and a.config.json.render(RenderContext({"event": {"sku": "s1"}})) == {"sku": "s1"}
    assert b.config.json.render(RenderContext({})) == {"sku": "base"}
    with pytest.raises(FlowInvalid, match="duplicate key 'json'"):
        load_flow("steps:\n  - id: a\n    http: {url: https://x.test, json: 1, json: 2}\n", "dup.yaml")


def test_defaults_give_every_step_of_a_type_keys_it_does_not_set() -> None:
    flow = load_flow("""
defaults:
  http: {timeout: 3s, retry: {max_attempts: 9}, headers: {X-Team: ops}}
steps:
  - id: a
    http: {url: https://x.test/a}
  - id: b
    http: {url: https://x.test/b, timeout: 20s}
""", "d.yaml")
    a, b = flow.steps
    assert a.config.timeout == 3 and a.config.retry.max_attempts == 9 and b.config.timeout == 20
    assert b.config.headers.render(RenderContext({})) == {"X-Team": "ops"}
    with pytest.raises(FlowInvalid, match="defaults.http.timout: unknown key 'timout'"):
        load_flow("defaults: {http: {timout: 3s}}\nsteps:\n  - id: a\n    transform: {}\n", "d.yaml")
    with pytest.raises(FlowInvalid, match="no defaults for 'transform'"):
        load_flow("defaults: {transform: {x: 1}}\nsteps:\n  - id: a\n    transform: {}\n", "d.yaml")
