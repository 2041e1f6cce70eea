"""Flow fixtures: an event, stubbed http responses by step id, and what must come out.

``flows/tests/<flow_id>/<name>.yaml``::

    event: {...}                 # the webhook body
    headers: {X-GitHub-Event: push}
    env: {CRM_URL: https://crm.test}   # optional ${VAR} values for this fixture
    stubs:                       # http step id (every item of a foreach) or path -> response;
      crm_contact: {status: 201, json: {id: c_1}}   # unstubbed http steps fail (no network)
      lines[2].decrement: {status: 409, json: {error: out of stock}}   # one item only
    expect:
      status: succeeded
      steps:
        payment: {output: {email: a@b.com}}          # subset match
        crm_contact: {request: {url: ${CRM_URL}/contacts, json: {email: a@b.com}}}   # secrets stay redacted
        invoice: {status: skipped}
        lines[0].decrement: {status: succeeded}         # steps by path, and a foreach's list of outputs
        lines: {output: [{response: {status: 200}}]}

Fixtures run in-process with no network, like unit tests of an integration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import FlowInvalid
from engine.loader import parse_yaml
from engine.model import Event, Flow, Headers, RunDetail, RunResult, StepResult, Trigger, step_id_of
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
        if step_id_of(str(sid)) not in flow.by_id:
            res.problems.append(f"{path}: stubs.{sid}: flow {flow.id} has no step {step_id_of(str(sid))!r}")
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
    final = {s.path: s for s in result.steps}  # the last attempt of each step
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
    """None when ``want`` is contained in ``got`` (mappings by key, lists item by item, the rest by equality;
    ``"~text"`` matches a string containing it)."""
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
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            problem = _subset(w, g, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(want, str) and isinstance(got, str) and want.startswith("~"):
        return None if want[1:] in got else f"{path}: expected text containing {want[1:]!r}, got {got[:200]!r}"
    if want != got:
        return f"{path}: expected {json.dumps(want, default=str)}, got {json.dumps(got, default=str)[:300]}"
    return None


# --- export: a finished run as a fixture (the UI's "Download as flow test fixture") ----------------

EXPORT_SKIP_HEADERS = frozenset({
    "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "expect",
    "accept-encoding",
})
PLACEHOLDER_ENV_VALUE = "http://192.0.2.1"
"""Stands in for ``${VAR}``s without a default: a URL (so http urls still validate) on TEST-NET-1, never reached."""


def placeholder_env(flow: Flow) -> dict[str, str]:
    """Fixture ``env`` for the flow's ``${VAR}``s that have no default: placeholders, never the real values (I9).

    Stubbed http steps still render their url and headers, so a missing variable would fail the fixture.
    """
    from engine.loader import step_exprs
    from engine.steps import walk
    from engine.templating import env_refs

    names = {ref.name for step in walk(flow.steps + flow.on_failure) for _, expr in step_exprs(step)
             for ref in env_refs(expr) if ref.default is None}
    return {name: PLACEHOLDER_ENV_VALUE for name in sorted(names)}


def export_fixture(detail: RunDetail, flow_id: str, *, env: Mapping[str, str] | None = None,
                   trigger: Trigger | None = None) -> str:
    """YAML for ``hookline test`` that replays a finished run in-process: its event, stubs and final statuses.

    The event body is parsed as the worker parsed it; headers come as stored (already redacted), minus
    transport headers and redacted values, which would only replay as ``[redacted]``. Each http step is
    stubbed with its last recorded response (``json`` when the body parses, else ``body``); a step that
    never got one (timeout, connection error) stays unstubbed and fails the same way, as fixtures have
    no network. ``expect`` pins the run's status and each step's final status. ``env`` is written as is:
    pass :func:`placeholder_env`, never real secrets.
    """
    import yaml

    from engine.events import make_event

    event = make_event(detail.event, trigger)  # the flow's body rules (a GitHub form delivery's payload)
    headers = {k: v for k, v in detail.event.headers if k.lower() not in EXPORT_SKIP_HEADERS and v != "[redacted]"}
    query = {k: v for k, v in event.query.items() if v != "[redacted]"}
    final = {step.path: step for step in detail.steps}  # oldest attempt first, so the last one wins
    stubs = stubs_from(detail.steps)
    received = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(detail.event.received_at))
    doc: dict[str, Any] = {
        "name": f"run {detail.run.id}",
        "description": f"exported from run {detail.run.id} of {flow_id} ({detail.run.status.value}), received {received}",
        "event": event.body,
    }
    if headers:
        doc["headers"] = headers
    if query:
        doc["query"] = query
    if env:
        doc["env"] = dict(env)
    if stubs:
        doc["stubs"] = stubs
    doc["expect"] = {
        "status": detail.run.status.value,
        "steps": {sid: {"status": s.status.value} for sid, s in final.items()},
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)


def stubs_from(steps: list[StepResult]) -> dict[str, Any]:
    """Each path's last recorded response as a stub (fixtures exported from a run, dry runs of a run)."""
    return {step.path: _stub_from(step.response) for step in steps if step.response is not None}


def _stub_from(response: Mapping[str, Any]) -> dict[str, Any]:
    stub: dict[str, Any] = {"status": int(response.get("status") or 200)}
    body = response.get("body")
    if isinstance(body, str) and body:
        try:
            stub["json"] = json.loads(body)
        except ValueError:
            stub["body"] = body
    return stub
