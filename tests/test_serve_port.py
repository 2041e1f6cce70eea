"""`hookline serve --port N` just works (issue 15): with no *_URL variable set, every example flow calls the
sandbox of the server it runs in, through the built-in ${HOOKLINE_URL}, and `hookline validate` agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.store import RunStore
from tests.support import ROOT, free_port, serving, wait_for

FLOWS = ROOT / "flows"
# flow -> its happy fixture (flows/tests/<flow>/<name>.yaml) and the sandboxes that run must call
EXAMPLES = {
    "stripe_payment_sync": ("succeeded_payment", {"crm", "accounting"}),
    "github_notify": ("push", {"chat"}),
    "shopify_order_sync": ("order_created", {"inventory", "erp"}),
    "billing_router": ("invoice_paid", {"accounting"}),
    "order_sync": ("paid_order", {"inventory", "accounting", "chat"}),
}


def _demo_secrets() -> dict[str, str]:
    lines = (FLOWS / "demo.env").read_text(encoding="utf-8").splitlines()
    pairs = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {k: v for k, v in pairs.items() if not k.startswith("HOOKLINE_")}


@pytest.fixture
def no_url_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples' variables and HOOKLINE_URL unset in the processes this test starts."""
    for name in list(os.environ):
        if name.endswith("_URL") and not name.startswith("HOOKLINE_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture
def served(tmp_path: Path, no_url_variables: None) -> Iterator[tuple[str, str, dict[str, str]]]:
    port = free_port()
    assert port != 8000
    db_url = f"sqlite:///{tmp_path}/h.db"
    env = {"HOOKLINE_DATABASE_URL": db_url, "HOOKLINE_HUEY_PATH": str(tmp_path / "q.db"),
           "HOOKLINE_FLOWS_DIR": str(FLOWS), **_demo_secrets()}
    with serving("serve", port=port, env=env, log=tmp_path / "serve.log") as base:
        yield base, db_url, env


def _send(base: str, env: dict[str, str], flow: str, fixture: dict[str, Any], tmp_path: Path) -> int:
    event = tmp_path / f"{flow}.json"
    event.write_text(json.dumps(fixture["event"]))
    headers = [f"--header={k}={v}" for k, v in (fixture.get("headers") or {}).items()
               if "signature" not in k.lower() and "hmac" not in k.lower()]  # hookline send signs
    proc = subprocess.run([sys.executable, "-m", "engine.app.cli", "send", flow, "--event", str(event), "--url", base,
                           "--flows", str(FLOWS), *headers], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status, _, body = proc.stdout.partition(" ")
    assert status == "202", proc.stdout
    return int(json.loads(body)["run_id"])


def test_every_example_runs_against_the_sandbox_of_a_server_on_another_port(
        served: tuple[str, str, dict[str, str]], tmp_path: Path) -> None:
    base, db_url, env = served
    store = RunStore(db_url)
    try:
        runs = {}
        for flow, (name, _) in EXAMPLES.items():
            fixture = yaml.safe_load((FLOWS / "tests" / flow / f"{name}.yaml").read_text(encoding="utf-8"))
            runs[flow] = _send(base, env, flow, fixture, tmp_path)

        def finished() -> bool:
            return all(r is not None and r.status.terminal for r in map(store.get_run_record, runs.values()))

        wait_for(finished, timeout=60, what="every example run to finish")
        for flow, run_id in runs.items():
            detail = store.get_run(run_id)
            assert detail is not None
            assert detail.run.status.value == "succeeded", (flow, detail.run.error)
            urls = [s.request["url"] for s in detail.steps if s.request]
            assert urls and all(u.startswith(f"{base}/sandbox/") for u in urls), (flow, urls)
        called = {r["name"] for r in store.sandbox_list(limit=1000)}
        for flow, (_, sandboxes) in EXAMPLES.items():
            assert sandboxes <= called, (flow, sandboxes - called)
    finally:
        store.dispose()


def test_validate_reports_no_missing_variable_for_the_examples(no_url_variables: None) -> None:
    proc = subprocess.run([sys.executable, "-m", "engine.app.cli", "validate", str(FLOWS)], cwd=ROOT,
                          env={**os.environ, **_demo_secrets()}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    flow_warnings = [line for line in proc.stdout.splitlines() if ": flow " in line and "is not set" in line]
    assert flow_warnings == [] and "HOOKLINE_URL" not in proc.stdout + proc.stderr, proc.stdout


def test_hookline_url_is_built_in_nests_in_defaults_and_is_no_secret() -> None:
    from engine import envrefs
    from engine.templating import RenderContext, Where

    text = "${INVENTORY_URL:-${HOOKLINE_URL}/sandbox/inventory}/decrement"
    (ref, rest) = envrefs.split(text)
    assert isinstance(ref, envrefs.EnvRef) and rest == "/decrement"
    assert envrefs.expand(text, {}) == "http://127.0.0.1:8000/sandbox/inventory/decrement"
    assert envrefs.expand(text, {"HOOKLINE_URL": "http://127.0.0.1:8101/"}) == \
        "http://127.0.0.1:8101/sandbox/inventory/decrement"
    assert envrefs.expand(text, {"INVENTORY_URL": "https://inv.example"}) == "https://inv.example/decrement"
    bare = envrefs.refs("${HOOKLINE_URL}/x")[0]
    assert bare.default is not None  # never reported missing (validate, the flows page, fixtures)
    ctx = RenderContext({}, {"HOOKLINE_URL": "http://127.0.0.1:8101"})
    assert ctx.env_value(bare, Where()) == "http://127.0.0.1:8101" and ctx.secrets == {}


def test_serving_sets_hookline_url_to_the_address_served_on_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.app.processes import listening_env
    from engine.config import Settings, environ

    monkeypatch.delenv("HOOKLINE_URL", raising=False)
    assert listening_env("127.0.0.1", 8101)["HOOKLINE_URL"] == "http://127.0.0.1:8101"
    assert listening_env("0.0.0.0", 8101)["HOOKLINE_URL"] == "http://127.0.0.1:8101"
    assert listening_env("::", 8101)["HOOKLINE_URL"] == "http://[::1]:8101"
    assert "HOOKLINE_URL" not in listening_env("127.0.0.1", 0)  # not bound yet
    assert environ(Settings(url="http://127.0.0.1:8101"))["HOOKLINE_URL"] == "http://127.0.0.1:8101"
    monkeypatch.setenv("HOOKLINE_URL", "https://hookline.example")
    assert "HOOKLINE_URL" not in listening_env("127.0.0.1", 8101)
