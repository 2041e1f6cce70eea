"""The example flows are executable documentation: each loads cleanly and passes its fixtures.

Also pins the command-line contract a flow author relies on: `hookline test` reports every fixture and
`hookline validate` reports every problem of a broken file at once, each as `file:line: key.path: message`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.catalog import flow_files
from engine.errors import FlowInvalid
from engine.flowtest import fixture_files, run_fixture
from engine.loader import load_flow, load_flow_file, missing_env_vars

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"
FLOW_FILES = flow_files(FLOWS)


def _demo_env() -> dict[str, str]:
    """flows/demo.env as `make run` loads it (KEY=VALUE lines, # comments)."""
    env: dict[str, str] = {}
    for line in (FLOWS / "demo.env").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def _fixtures() -> list[tuple[Path, Path]]:
    pairs = []
    for path in FLOW_FILES:
        try:
            flow_id = load_flow_file(path).id
        except FlowInvalid:
            flow_id = path.stem  # test_flow_loads reports the problems
        pairs.extend((path, fx) for fx in fixture_files(FLOWS, flow_id))
    return pairs


FIXTURES = _fixtures()


def _hookline() -> str:
    script = Path(sys.executable).parent / "hookline"
    return str(script) if script.exists() else (shutil.which("hookline") or "hookline")


def _cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    return subprocess.run([_hookline(), *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=120)


def test_there_are_example_flows() -> None:
    assert {p.stem for p in FLOW_FILES} >= {"stripe_payment_sync", "github_notify", "shopify_order_sync"}


@pytest.mark.parametrize("path", FLOW_FILES, ids=lambda p: p.name)
def test_flow_loads(path: Path) -> None:
    try:
        flow = load_flow_file(path)
    except FlowInvalid as exc:
        pytest.fail("\n".join(str(e) for e in exc.errors))
    assert missing_env_vars(flow, _demo_env()) == [], "set these in flows/demo.env or give them a default"
    assert fixture_files(FLOWS, flow.id), f"{path.name} has no fixtures in flows/tests/{flow.id}/"


@pytest.mark.parametrize("flow_path, fixture", FIXTURES, ids=[f"{f.parent.name}/{f.stem}" for _, f in FIXTURES])
def test_fixture(flow_path: Path, fixture: Path) -> None:
    result = run_fixture(load_flow_file(flow_path), fixture)
    assert result.passed, f"{fixture}:\n" + "\n".join(result.problems)


def test_every_flow_has_a_happy_and_a_failing_fixture() -> None:
    for path in FLOW_FILES:
        flow = load_flow_file(path)
        statuses = set()
        for fx in fixture_files(FLOWS, flow.id):
            result = run_fixture(flow, fx).result
            assert result is not None, fx
            statuses.add(str(result.status))
        assert {"succeeded", "failed"} <= statuses, f"{flow.id}: fixtures end as {sorted(statuses)}"


def test_hookline_test_command_passes_every_fixture() -> None:
    proc = _cli("test", "flows")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == f"{len(FIXTURES)} passed, 0 failed", proc.stdout
    assert sum(line.startswith("PASS ") for line in lines) == len(FIXTURES)
    assert not any(line.startswith(("FAIL", "----")) for line in lines), proc.stdout


def test_hookline_test_command_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    (flows / "tests" / "stripe_payment_sync").mkdir(parents=True)
    shutil.copy(FLOWS / "stripe_payment_sync.yaml", flows)
    fixture = (FLOWS / "tests" / "stripe_payment_sync" / "other_event_type.yaml").read_text(encoding="utf-8")
    (flows / "tests" / "stripe_payment_sync" / "wrong.yaml").write_text(
        fixture.replace("status: filtered\n", "status: succeeded\n", 1), encoding="utf-8")
    proc = _cli("test", str(flows))
    assert proc.returncode == 1
    assert "FAIL stripe_payment_sync" in proc.stdout
    assert "status: expected succeeded, got filtered" in proc.stdout
    assert proc.stdout.strip().endswith("0 passed, 1 failed")


def test_hookline_validate_accepts_the_example_flows_with_the_demo_env() -> None:
    proc = _cli("validate", "flows", env=_demo_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in FLOW_FILES:
        assert f"{path.relative_to(ROOT)}: ok (" in proc.stdout


BROKEN = """\
id: broken
colour: blue
trigger:
  verify:
    provider: gitlab
    secret: s3cret
steps:
  - id: first
    transform:
      total: $.items[?(
  - id: notify
    when: steps.later.ok
    http:
      url: "http://127.0.0.1:8000/sandbox/x/{{ event.id | }}"
      timeout: soon
  - id: first
    filter: event.type == "x"
  - id: later
    transform: {ok: true}
"""

# (line, key path, part of the message): one per problem class
EXPECTED = [
    (2, "colour", "unknown key 'colour'"),
    (5, "trigger.verify.provider", "unknown verify provider 'gitlab'"),
    (10, "steps[0].transform.total", "invalid JSONPath"),
    (12, "steps[1].when", "steps.later is not available yet"),
    (14, "steps[1].http.url", "Jinja syntax error"),
    (15, "steps[1].http.timeout", "expected a duration"),
    (16, "steps[2].id", "duplicate step id 'first'"),
]
PROBLEM = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<path>[\w.\[\]]+): (?P<message>.+)$")


def test_hookline_validate_reports_every_problem_with_its_location(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    proc = _cli("validate", str(path))
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    found = []
    for line in lines:
        match = PROBLEM.match(line)
        assert match, f"not file:line: path: message: {line!r}"
        assert match["file"] == str(path)
        found.append((int(match["line"]), match["path"], match["message"]))
    for line, key, text in EXPECTED:
        assert any(f[0] == line and f[1] == key and text in f[2] for f in found), (line, key, text, lines)
    assert len(found) == len(EXPECTED), lines
    assert f"{len(EXPECTED)} problem(s) in 1 file(s)" in proc.stderr


def test_every_bad_item_of_one_templated_value_is_reported() -> None:
    text = """\
steps:
  - id: shape
    transform:
      a: "{{ event.a | }}"
      b: $.b[
      c: "{{ steps.later.x }}"
  - id: later
    transform: {x: 1}
"""
    with pytest.raises(FlowInvalid) as exc:
        load_flow(text, "t.yaml")
    assert [e.path for e in exc.value.errors] == ["steps[0].transform.a", "steps[0].transform.b", "steps[0].transform.c"]
