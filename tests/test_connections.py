"""Connections without a token endpoint: loading connections.yaml, static credentials, signed forwarding,
references from flows (catalog, `hookline validate`), redaction, and the flows page.

Signatures are checked by the `standardwebhooks` library and by Hookline's own verification presets on
the exact bytes the target received.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks

from engine.catalog import BrokenFlow, FlowCatalog
from engine.connections import ConnectionFailed
from engine.connections.load import load_connections
from engine.connections.runtime import ConnectionRuntime
from engine.errors import FlowInvalid, VerificationError
from engine.model import Flow, RunStatus
from engine.presets import parse_verify
from engine.runner import run_flow, run_to_end
from engine.steps import RunOptions
from tests.conftest import make_event, make_flow
from tests.oauth_server import leaks
from tests.support import ROOT, Target

WHSEC = "whsec_" + base64.b64encode(b"partner-signing-key-0123456789ab").decode()
ENV = {"ACME_TOKEN": "acme-tok-3f9d2c", "BILLING_USER": "hookline", "BILLING_PASSWORD": "pa:ss/w+rd=9",
       "LEDGER_API_KEY": "ledger-key+/7Q==", "PARTNER_SIGNING_SECRET": WHSEC, "RECEIVER_SECRET": "recv-secret-81ab"}

CONNECTIONS = """
connections:
  acme:
    type: bearer
    token: ${ACME_TOKEN}
  billing:
    type: basic
    username: ${BILLING_USER}
    password: ${BILLING_PASSWORD}
  ledger:
    type: api_key
    header: X-Ledger-Key
    key: ${LEDGER_API_KEY}
  ledger_q:
    type: api_key
    query: api_key
    key: ${LEDGER_API_KEY}
  partner:
    type: standard-webhooks
    secret: ${PARTNER_SIGNING_SECRET}
  receiver:
    type: hmac_signature
    secret: ${RECEIVER_SECRET}
    header: X-Hub-Signature-256
    prefix: sha256=
    timestamp_header: X-Signature-Timestamp
  receiver64:
    type: hmac_signature
    secret: ${RECEIVER_SECRET}
    header: X-Sig
    algorithm: sha512
    encoding: base64
"""


def runtime(text: str = CONNECTIONS) -> ConnectionRuntime:
    conns = load_connections(text)
    assert conns.errors == []
    return ConnectionRuntime(conns.get)


def call(target: Target, connection: str, *, body: Any = None, **http: Any) -> Any:
    """Run a one-step flow calling the target with ``connection``; the result and what the target got."""
    step: dict[str, Any] = {"url": f"{target.url}/in", "connection": connection, **http}
    if body is not None:
        step["json"] = body
    flow = make_flow([{"id": "send", "http": step}])
    import httpx

    with httpx.Client(timeout=5) as client:
        result = run_flow(flow, make_event({"id": "e1"}), http=client, env=ENV,
                          options=RunOptions(connections=runtime()))
    return result, target.requests()[-1]


def preset_accepts(config: Any, seen: Any) -> None:
    """Hookline's verification of what the target received."""
    from engine.presets import Request, verify_request

    request = Request.build(body=seen.body, headers=seen.headers, url=f"http://127.0.0.1{seen.path}")
    verify_request(config, request, env=ENV, now=time.time())


def records(result: Any) -> str:
    return json.dumps([vars(s) for s in result.steps], default=str)


def test_the_example_from_the_issue_loads_and_unset_variables_are_warnings() -> None:
    conns = load_connections((ROOT / "flows" / "connections.yaml").read_text(), "flows/connections.yaml")
    assert conns.errors == [] and sorted(conns.connections) == ["crm", "ledger", "partner"]
    assert [c.type for _, c in sorted(conns.connections.items())] == [
        "oauth2_client_credentials", "api_key", "standard-webhooks"]
    warnings = conns.env_warnings({})
    assert "flows/connections.yaml:7: connection crm: environment variable CRM_CLIENT_SECRET is not set and has " \
           "no default" in warnings
    assert len(warnings) == 5 and conns.env_warnings({k: "x" for k in ("CRM_TOKEN_URL", "CRM_CLIENT_ID",
        "CRM_CLIENT_SECRET", "LEDGER_API_KEY", "PARTNER_SIGNING_SECRET")}) == []


def test_every_problem_is_reported_with_its_line_and_good_entries_still_load() -> None:
    text = """connections:
  good:
    type: bearer
    token: ${T}
  literal:
    type: api_key
    header: X-Key
    key: abc123
  both:
    type: api_key
    header: X-Key
    query: k
    key: ${K}
  odd:
    type: oauth2_client_credentials
    token_url: ${U}
    client_id: c
    client_secret: ${S}
    auth_style: header
    colour: blue
  typo:
    type: oauth3
"""
    conns = load_connections(text, "c.yaml")
    assert sorted(conns.connections) == ["good"] and sorted(conns.broken) == ["both", "literal", "odd", "typo"]
    assert [str(e) for e in conns.errors] == [
        "c.yaml:8: connections.literal.key: must be a ${VAR} reference: secrets are read from the environment, "
        "never written here",
        "c.yaml:9: connections.both: api_key takes either header or query, not both",
        "c.yaml:20: connections.odd.colour: unknown key 'colour' for type oauth2_client_credentials; allowed: "
        "token_url, client_id, client_secret, scopes, audience, auth_style, timeout, refresh_before, default_lifetime",
        "c.yaml:19: connections.odd.auth_style: expected one of basic, body, got 'header'",
        "c.yaml:22: connections.typo.type: unknown connection type 'oauth3'; expected one of: api_key, basic, bearer, "
        "hmac_signature, oauth2_client_credentials, oauth2_refresh_token, standard-webhooks",
    ]
    assert [str(e) for e in load_connections("connections: [\n", "c.yaml").errors][0].startswith(
        "c.yaml:2: YAML syntax error")


def test_static_credentials_are_accepted_by_hookline_presets(target: Target) -> None:
    def verifies(provider: dict[str, Any], seen: Any) -> None:
        config, problems = parse_verify(provider)
        assert config is not None, problems
        preset_accepts(config, seen)

    result, seen = call(target, "acme")
    assert seen.headers["authorization"] == "Bearer acme-tok-3f9d2c"
    assert "acme-tok-3f9d2c" not in records(result)
    result, seen = call(target, "billing", headers={"Authorization": "Bearer overridden"})
    verifies({"provider": "basic", "username": "${BILLING_USER}", "password": "${BILLING_PASSWORD}"}, seen)
    result, seen = call(target, "ledger")
    verifies({"provider": "token", "header": "X-Ledger-Key", "secret": "${LEDGER_API_KEY}"}, seen)
    result, seen = call(target, "ledger_q", query={"page": 2})
    verifies({"provider": "token", "query": "api_key", "secret": "${LEDGER_API_KEY}"}, seen)
    assert result.steps[0].request["url"].endswith("?page=2&api_key=${connection:ledger_q}")
    assert leaks({"records": records(result)}, {k: v for k, v in ENV.items() if k != "BILLING_USER"}) == []


def test_standard_webhooks_signatures_verify_with_the_library_and_the_preset(target: Target) -> None:
    target.script["/in"] = [(503, {}), (200, {"ok": True})]
    flow = make_flow([{"id": "forward", "http": {"url": f"{target.url}/in", "connection": "partner",
                                                  "json": {"type": "order.paid", "note": "crème brûlée"},
                                                  "retry": {"max_attempts": 2, "initial": "1ms"}}}])
    import httpx

    with httpx.Client(timeout=5) as client:
        result = run_to_end(flow, make_event({"id": "e1"}), http=client, env=ENV, sleep=lambda _: None,
                            options=RunOptions(connections=runtime()))
    assert result.status is RunStatus.SUCCEEDED
    first, second = target.requests("/in")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]  # a retry is the same message
    config, _ = parse_verify({"provider": "standard-webhooks", "secret": "${PARTNER_SIGNING_SECRET}"})
    assert config is not None
    for seen in (first, second):
        assert standardwebhooks.Webhook(WHSEC).verify(seen.body, seen.headers) == {
            "type": "order.paid", "note": "crème brûlée"}
        preset_accepts(config, seen)
    signature = second.headers["webhook-signature"].removeprefix("v1,")
    assert signature not in records(result) and "${connection:partner}" in records(result)


@pytest.mark.parametrize("name", ["receiver", "receiver64"])
def test_hmac_signatures_verify_with_the_hmac_preset_on_the_exact_bytes_sent(target: Target, name: str) -> None:
    options = {"receiver": {"header": "X-Hub-Signature-256", "prefix": "sha256=",
                            "timestamp_header": "X-Signature-Timestamp"},
               "receiver64": {"header": "X-Sig", "algorithm": "sha512", "encoding": "base64"}}[name]
    config, problems = parse_verify({"provider": "hmac", "secret": "${RECEIVER_SECRET}", **options})
    assert config is not None, problems
    for http in ({"body": "raw text, ünïcode\n"}, {"form": {"a": "1 2", "b": "é"}}, {"json": [1, {"x": None}]}):
        _, seen = call(target, name, **http)
        preset_accepts(config, seen)
        with pytest.raises(VerificationError):
            preset_accepts(config, replace(seen, body=seen.body + b" "))


def test_an_unset_variable_fails_the_step_naming_it(target: Target) -> None:
    import httpx

    flow = make_flow([{"id": "send", "http": {"url": f"{target.url}/in", "connection": "ledger"}}])
    with httpx.Client(timeout=5) as client:
        result = run_flow(flow, make_event(), http=client, env={}, options=RunOptions(connections=runtime()))
    assert result.status is RunStatus.FAILED and target.requests() == []
    assert result.steps[0].error_message == \
        "connection ledger: environment variable LEDGER_API_KEY is not set (key)"
    with pytest.raises(ConnectionFailed, match="not defined"):
        runtime().prepare("nope", None, None, None)  # type: ignore[arg-type]


def test_dry_runs_and_stubs_send_nothing_and_fetch_no_token() -> None:
    text = "connections:\n  crm:\n    type: oauth2_client_credentials\n    token_url: http://127.0.0.1:9/token\n" \
           "    client_id: c\n    client_secret: ${S}\n"
    flow = make_flow([{"id": "send", "http": {"url": "http://127.0.0.1:9/in", "connection": "crm"}}])
    result = run_flow(flow, make_event(), env={}, dry_run=True, options=RunOptions(connections=runtime(text)))
    assert result.status is RunStatus.SUCCEEDED and result.steps[0].request["connection"] == "crm"


def test_redact_keeps_secrets_a_response_returns_out_of_every_record(target: Target) -> None:
    import httpx

    minted = "minted-9c2b7e51aa"
    target.script["/mint"] = [(200, {"access_token": minted, "items": [{"key": "k-1a2b3c"}, {"key": "k-4d5e6f"}]})]
    flow = make_flow([
        {"id": "mint", "http": {"url": f"{target.url}/mint", "redact": ["$.access_token", "$.items[*].key"]}},
        {"id": "use", "http": {"url": f"{target.url}/use",
                               "headers": {"X-Token": "{{ steps.mint.response.json.access_token }}"}}},
        {"id": "shape", "transform": {"t": "{{ steps.mint.response.json.access_token }}"}},
    ])
    with httpx.Client(timeout=5) as client:
        result = run_flow(flow, make_event(), http=client)
    assert result.status is RunStatus.SUCCEEDED
    assert target.requests("/use")[0].headers["x-token"] == minted  # later steps see the value itself
    text = records(result)
    assert leaks({"records": text}, {"token": minted, "k1": "k-1a2b3c", "k2": "k-4d5e6f"}) == []
    assert "${mint:$.access_token}" in text
    with pytest.raises(FlowInvalid, match="redact: list JSONPaths"):
        make_flow([{"id": "x", "http": {"url": "http://127.0.0.1:9/", "redact": ["access_token"]}}])


FLOW_NAMING = """id: uses
steps:
  - id: shape
    transform: {{a: 1}}
  - id: push
    http:
      url: http://127.0.0.1:9/x
      connection: {name}
"""


def test_a_flow_naming_an_unknown_connection_is_not_served_until_it_exists(tmp_path: Path) -> None:
    (tmp_path / "uses.yaml").write_text(FLOW_NAMING.format(name="crm"))
    catalog = FlowCatalog(tmp_path, check_interval=0)
    broken = catalog.get("uses")
    assert isinstance(broken, BrokenFlow)
    assert [str(e) for e in broken.errors] == [
        f"{tmp_path}/uses.yaml:8: steps[1].http.connection: unknown connection 'crm': there is no connections.yaml "
        "next to the flows"]
    (tmp_path / "connections.yaml").write_text("connections:\n  crm:\n    type: bearer\n    token: '42'\n")
    catalog.refresh(force=True)
    assert [str(e) for e in catalog.get("uses").errors] == [  # type: ignore[union-attr]
        f"{tmp_path}/uses.yaml:8: steps[1].http.connection: connection 'crm' is invalid ({tmp_path}/connections.yaml:"
        "4: connections.crm.token: must be a ${VAR} reference: secrets are read from the environment, never written "
        "here)"]
    (tmp_path / "connections.yaml").write_text("connections:\n  crm:\n    type: bearer\n    token: ${CRM_TOKEN}\n")
    catalog.refresh(force=True)
    assert isinstance(catalog.get("uses"), Flow) and catalog.connection("crm") is not None
    assert [f.id for f in catalog.all()] == ["uses"]  # connections.yaml is not a flow


def test_validate_reports_a_step_naming_an_unknown_connection_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "uses.yaml").write_text(FLOW_NAMING.format(name="crmx"))
    (tmp_path / "connections.yaml").write_text((ROOT / "flows" / "connections.yaml").read_text())
    out = subprocess.run([sys.executable, "-m", "engine.app.cli", "validate", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{tmp_path}/uses.yaml:8: steps[1].http.connection: unknown connection 'crmx'; {tmp_path}/connections.yaml " \
           "defines: crm, ledger, partner" in out.stdout.splitlines()
    assert f"warning: {tmp_path}/connections.yaml:7: connection crm: environment variable CRM_TOKEN_URL is not set " \
           "and has no default" in out.stdout.splitlines()
    assert "Traceback" not in out.stderr


def test_the_flows_page_lists_connections_without_their_values(make_service: Any, sqlite_url: str) -> None:
    from web import create_app

    svc, _ = make_service({"uses": FLOW_NAMING.format(name="partner"),
                           "connections": (ROOT / "flows" / "connections.yaml").read_text()}, sqlite_url, env=ENV)
    client = create_app(svc.settings, service=svc).test_client()
    data = client.get("/flows.json").get_json()
    by_name = {c["name"]: c for c in data["connections"]}
    assert sorted(by_name) == ["crm", "ledger", "partner"]
    assert by_name["partner"]["used_by"] == ["uses"] and by_name["partner"]["type"] == "standard-webhooks"
    assert by_name["crm"]["token"] == {"valid_until": None, "valid": False, "refreshed_at": None, "last_error": None,
                                       "last_error_at": None}
    assert by_name["crm"]["warnings"] == ["connection crm: environment variable CRM_TOKEN_URL is not set and has no "
                                          "default", "connection crm: environment variable CRM_CLIENT_ID is not set "
                                          "and has no default", "connection crm: environment variable "
                                          "CRM_CLIENT_SECRET is not set and has no default"]
    page = client.get("/flows").get_data(as_text=True)
    assert "Connections" in page and "standard-webhooks" in page and "oauth2_client_credentials" in page

    # a failed refresh shows with its message (no value: the message names the status and the OAuth2 code)
    from engine.connection_store import StoreTokenCache

    cache, now = StoreTokenCache(svc.store), time.time()
    assert cache.lease("crm", b"k" * 32, "w", now, now + 15) is not None
    cache.fail("crm", "w", "connection crm: token endpoint answered 401 invalid_client", False, now)
    crm = {c["name"]: c for c in client.get("/flows.json").get_json()["connections"]}["crm"]
    assert crm["token"]["last_error"] == "connection crm: token endpoint answered 401 invalid_client"
    page = client.get("/flows").get_data(as_text=True)
    assert "Last refresh failed" in page and "answered 401 invalid_client" in page
    assert leaks({"page": page, "json": json.dumps(data)}, {"secret": WHSEC, "key": ENV["LEDGER_API_KEY"]}) == []
