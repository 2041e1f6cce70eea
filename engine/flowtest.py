"""Flow fixtures: an event, stubbed http responses by step id, and what must come out.

``flows/tests/<flow_id>/<name>.yaml``::

    event: {...}                 # the webhook body
    headers: {X-GitHub-Event: push}
    env: {CRM_URL: https://crm.test}   # optional ${VAR} values for this fixture
    stubs:                       # http step id -> response; unstubbed http steps fail (no network)
      crm_contact: {status: 201, json: {id: c_1}}
    expect:
      status: succeeded
      steps:
        payment: {output: {email: a@b.com}}          # subset match
        crm_contact: {request: {url: https://crm.test/contacts, json: {email: a@b.com}}}
        invoice: {status: skipped}

Fixtures run in-process with no network, like unit tests of an integration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import FlowInvalid
from engine.loader import parse_yaml
from engine.model import Event, Flow, Headers, RunResult
from engine.runner import run_to_end

FIXTURE_KEYS = ("name", "description", "event", "headers", "query", "env", "stubs", "expect")


@dataclass
class FixtureResult:
    path: str
    name: str
    problems: list[str] = field(default_factory=list)
    result: RunResult | None = None

    @property
    def passed(self) -> bool:
        return not self.problems


def fixture_files(flows_dir: str | Path, flow_id: str) -> list[Path]:
    root = Path(flows_dir) / "tests" / flow_id
    return sorted(p for p in root.glob("*.y*ml") if p.is_file()) if root.is_dir() else []


def run_fixture(flow: Flow, path: str | Path) -> FixtureResult:
    path = str(path)
    try:
        raw, _doc = parse_yaml(Path(path).read_text(encoding="utf-8"), path)
    except FlowInvalid as exc:
        return FixtureResult(path, Path(path).stem, [str(e) for e in exc.errors])
    except (OSError, UnicodeDecodeError) as exc:
        return FixtureResult(path, Path(path).stem, [f"{path}: cannot read: {exc}"])
    if not isinstance(raw, dict):
        return FixtureResult(path, Path(path).stem, [f"{path}: a fixture is a mapping with event and expect"])
    name = str(raw.get("name") or Path(path).stem)
    res = FixtureResult(path, name)
    unknown = [k for k in raw if k not in FIXTURE_KEYS]
    if unknown:
        res.problems.append(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(FIXTURE_KEYS)}")
        return res
    stubs = raw.get("stubs") or {}
    for sid in stubs:
        if sid not in {s.id for s in flow.steps}:
            res.problems.append(f"{path}: stubs.{sid}: flow {flow.id} has no step {sid!r}")
    if res.problems:
        return res
    body = raw.get("event")
    event = Event(body=body, headers=Headers({str(k): str(v) for k, v in (raw.get("headers") or {}).items()}),
                  query={str(k): str(v) for k, v in (raw.get("query") or {}).items()},
                  raw=json.dumps(body, default=str).encode())
    env = {str(k): str(v) for k, v in (raw.get("env") or {}).items()}
    result = run_to_end(flow, event, env=env, stubs=stubs, sleep=lambda _s: None)
    res.result = result
    expect = raw.get("expect") or {}
    want_status = expect.get("status", "succeeded")
    if str(result.status) != want_status:
        res.problems.append(f"status: expected {want_status}, got {result.status}" +
                            (f" ({result.error})" if result.error else ""))
    final = {s.step_id: s for s in result.steps}  # the last attempt of each step
    for sid, want in (expect.get("steps") or {}).items():
        got = final.get(sid)
        if got is None:
            res.problems.append(f"steps.{sid}: did not run")
            continue
        actual = {"status": str(got.status), "output": got.output, "error": got.error_message,
                  "request": _request_view(got.request)}
        for key, value in (want or {}).items():
            if key not in actual:
                res.problems.append(f"steps.{sid}.{key}: unknown expectation (use status, output, error, request)")
                continue
            problem = _subset(value, actual[key], f"steps.{sid}.{key}")
            if problem:
                res.problems.append(problem)
    return res


def _request_view(request: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if request is None:
        return None
    view = dict(request)
    body = view.get("body")
    if isinstance(body, str):
        try:
            view["json"] = json.loads(body)
        except ValueError:
            pass
    return view


def _subset(want: Any, got: Any, path: str) -> str | None:
    """None when ``want`` is contained in ``got`` (mappings by key, everything else by equality)."""
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            return f"{path}: expected a mapping, got {json.dumps(got, default=str)[:200]}"
        for k, v in want.items():
            if k not in got:
                return f"{path}.{k}: missing (got keys {', '.join(map(str, got)) or 'none'})"
            problem = _subset(v, got[k], f"{path}.{k}")
            if problem:
                return problem
        return None
    if isinstance(want, str) and isinstance(got, str) and want.startswith("~"):
        return None if want[1:] in got else f"{path}: expected text containing {want[1:]!r}, got {got[:200]!r}"
    if want != got:
        return f"{path}: expected {json.dumps(want, default=str)}, got {json.dumps(got, default=str)[:300]}"
    return None
