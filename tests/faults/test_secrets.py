"""I9 through real processes: secrets never appear in the database, the logs, the pages or the API.

Flows use a verification secret, ``${VAR}`` secrets in an http step's URL path, query, headers and JSON
body, and a target that echoes a secret back (success) or puts one in a 400 body (failure); requests
carry an inbound Authorization header and cookie. After the runs end, the test reads every cell of every
table (bytes decoded), every process log, and every page and API response about those runs, and looks
for each secret value.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

from engine.presets import VerifyConfig, sign
from tests.faults.conftest import BACKENDS
from tests.faults.infra import SECRET, Stack
from tests.faults.oracles import dump_database, string_leaves, wait_all_terminal
from tests.oauth_server import CONNECTIONS
from tests.support import Target


def _secret(name: str) -> str:
    return f"{name.lower()}-{secrets.token_hex(10)}"


SECRETS = {name: _secret(name) for name in (
    "API_KEY", "SIGNING_KEY", "PATH_TOKEN", "QUERY_KEY", "BODY_TOKEN", "HEADER_VERIFY_TOKEN", "INBOUND_AUTH",
    "INBOUND_COOKIE")}

FLOWS = {  # TARGET is replaced by the target's base URL
    "outbound": """
id: outbound
trigger:
  verify: {provider: stripe, secret: "${STRIPE_SECRET}"}
  dedupe: $.id
steps:
  - id: call
    http:
      url: TARGET/api/${PATH_TOKEN}/contacts
      query: {key: "${QUERY_KEY}", ref: $.id}
      headers:
        Authorization: Bearer ${API_KEY}
        X-Signature: "${SIGNING_KEY}"
      json: {token: "${BODY_TOKEN}", ref: $.id, note: "key ${API_KEY} inside text"}
      timeout: 2s
  - id: echo
    http:
      url: TARGET/echo
      json: {ref: $.id}
      timeout: 2s
""",
    "rejected": """
id: rejected
trigger:
  verify: {provider: stripe, secret: "${STRIPE_SECRET}"}
steps:
  - id: call
    http:
      url: TARGET/reject
      headers: {X-Api-Key: "${API_KEY}"}
      json: {token: "${BODY_TOKEN}"}
      timeout: 2s
""",
    "tokhead": """
id: tokhead
trigger:
  verify: {provider: token, header: X-Hook-Token, secret: "${HEADER_VERIFY_TOKEN}"}
steps:
  - id: t
    transform: {seen: "{{ headers['x-hook-token'] }}"}
""",
}


def _flows(target: Target, names: list[str] | None = None) -> dict[str, str]:
    return {name: text.replace("TARGET", target.url) for name, text in FLOWS.items() if names is None or name in names}


def _stripe_post(stack: Stack, flow: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    raw = json.dumps(body).encode()
    signed = sign(VerifyConfig("stripe", (SECRET,), {"tolerance": 300}), raw, env={}, now=time.time())
    return httpx.post(f"{stack.url}/hooks/{flow}", content=raw, timeout=10,
                      headers={**signed, "Content-Type": "application/json", **headers})


def _pages(stack: Stack, run_ids: list[int], flows: list[str]) -> dict[str, str]:
    """Every page and API answer about these runs that the web process serves (absent routes are skipped)."""
    paths = ["/", "/runs", "/runs.json", "/flows", "/flows.json", "/api/runs", "/api/flows", "/metrics", "/readyz",
             "/sandbox.json"]
    for run_id in run_ids:
        paths += [f"/runs/{run_id}", f"/runs/{run_id}.json", f"/api/runs/{run_id}", f"/runs/{run_id}/fixture.yaml",
                  f"/runs/{run_id}/dry-run.json", f"/runs/{run_id}/dry-run"]
    for flow in flows:
        paths += [f"/flows/{flow}", f"/flows/{flow}.json", f"/api/flows/{flow}"]
    out = {}
    for path in paths:
        resp = httpx.get(f"{stack.url}{path}", timeout=10)
        if resp.status_code < 400:
            out[path] = resp.text
    dry = httpx.post(f"{stack.url}/api/runs/{run_ids[0]}/dry-run", timeout=10)
    if dry.status_code < 400:
        out["POST /api/runs/<id>/dry-run"] = dry.text
    return out


def _places(stack: Stack, run_ids: list[int], flows: list[str]) -> dict[str, str]:
    """name -> text of everywhere a secret could end up."""
    places: dict[str, str] = {}
    for table, column, text in dump_database(stack.db_url):
        places.setdefault(f"db {table}.{column}", "")
        places[f"db {table}.{column}"] += text + "\n"
    queue = stack.env.get("HOOKLINE_HUEY_PATH")
    if queue and Path(queue).exists():
        for table, column, text in dump_database(f"sqlite:///{queue}"):
            places[f"queue {table}.{column}"] = places.get(f"queue {table}.{column}", "") + text + "\n"
    for log in sorted(stack.tmp.glob("*.log")):
        places[f"log {log.name}"] = log.read_text(errors="replace")
    for path, text in _pages(stack, run_ids, flows).items():
        try:
            text += "\n" + "\n".join(string_leaves(json.loads(text)))  # what a JSON client reads, unescaped
        except ValueError:
            pass
        places[f"GET {path}"] = text
    return places


def _leaks(places: dict[str, str], values: dict[str, str], encoded: bool = False) -> list[str]:
    found = []
    for name, value in values.items():
        forms = {"raw": value}
        if encoded:
            forms.update({"percent-encoded": quote(value, safe=""), "form-encoded": quote_plus(value),
                          "json-escaped": json.dumps(value)[1:-1]})
        for form, text in forms.items():
            if text == value and form != "raw":
                continue
            found += [f"{name} ({form}) in {where}" for where, content in places.items() if text in content]
    return found


def _run_all(stack: Stack, target: Target) -> tuple[list[int], list[str]]:
    target.script["/echo"] = [(200, {"echo": SECRETS["API_KEY"], "note": f"token {SECRETS['BODY_TOKEN']}"})]
    target.script["/reject"] = [(400, {"error": f"bad key {SECRETS['API_KEY']}", "token": SECRETS["BODY_TOKEN"]})]
    stack.start_web(workers=1)
    stack.start_worker("worker", threads=2)
    inbound = {"Authorization": f"Bearer {SECRETS['INBOUND_AUTH']}", "Cookie": f"session={SECRETS['INBOUND_COOKIE']}"}
    answers = [
        _stripe_post(stack, "outbound", {"id": "evt_ok", "type": "paid"}, **inbound),
        _stripe_post(stack, "rejected", {"id": "evt_rejected"}, **inbound),
        httpx.post(f"{stack.url}/hooks/tokhead", json={"id": "t1"}, timeout=10,
                   headers={"X-Hook-Token": SECRETS["HEADER_VERIFY_TOKEN"], **inbound}),
    ]
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    wrong = _stripe_post(stack, "outbound", {"id": "evt_bad"}, **{"Stripe-Signature": "t=1,v1=00"})
    assert wrong.status_code == 401
    run_ids = [a.json()["run_id"] for a in answers]
    statuses = wait_all_terminal(stack.store, run_ids, timeout=30, what=stack.logs())
    assert [statuses[i] for i in run_ids] == ["succeeded", "failed", "succeeded"]
    # the secrets were really used: the target saw them, so their absence from storage is redaction
    [call] = target.requests(f"/api/{SECRETS['PATH_TOKEN']}/contacts?key={SECRETS['QUERY_KEY']}&ref=evt_ok")
    assert call.headers["authorization"] == f"Bearer {SECRETS['API_KEY']}"
    assert call.headers["x-signature"] == SECRETS["SIGNING_KEY"] and SECRETS["BODY_TOKEN"] in call.body.decode()
    return run_ids, list(FLOWS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_secret_in_database_logs_pages_or_api(backend: str, make_stack: Any, target: Target) -> None:
    stack = make_stack(backend, _flows(target), env=SECRETS)  # default HOOKLINE_REDACT_HEADERS
    run_ids, flows = _run_all(stack, target)
    places = _places(stack, run_ids, flows)
    assert any(k.startswith("db events") for k in places) and any(k.startswith("log web") for k in places)
    values = {**SECRETS, "STRIPE_SECRET": SECRET}
    assert _leaks(places, values) == []


ODD = {"QUERY_VERIFY_TOKEN": _secret("QUERY_VERIFY_TOKEN"), "B64_KEY": "k3y+" + secrets.token_hex(6) + "/Zz==",
       "QUOTED_TOKEN": 'tok"' + secrets.token_hex(6) + "\\end"}
ODD_FLOWS = {
    "tokq": """
id: tokq
trigger:
  verify: {provider: token, query: token, secret: "${QUERY_VERIFY_TOKEN}"}
steps:
  - id: t
    transform: {x: 1}
""",
    "encoded": """
id: encoded
steps:
  - id: call
    http:
      url: TARGET/enc
      query: {key: "${B64_KEY}"}
      json: {token: "${QUOTED_TOKEN}"}
      timeout: 2s
""",
}


_ODD: dict[str, Any] = {}


def _odd_places(make_stack: Any, target: Target) -> dict[str, str]:
    """One stack for the edge cases below (built by whichever of them runs first)."""
    if "places" not in _ODD:
        stack = make_stack("sqlite", {k: v.replace("TARGET", target.url) for k, v in ODD_FLOWS.items()}, env=ODD)
        stack.start_web(workers=1)
        stack.start_worker("worker", threads=2)
        token = httpx.post(f"{stack.url}/hooks/tokq?token={ODD['QUERY_VERIFY_TOKEN']}", json={"id": 1}, timeout=10)
        enc = httpx.post(f"{stack.url}/hooks/encoded", json={"id": 2}, timeout=10)
        # set-up problems raise RuntimeError, so a broken harness is never mistaken for a leak
        if (token.status_code, enc.status_code) != (202, 202):
            raise RuntimeError(f"events not accepted: {token.text} {enc.text}")
        ids = [token.json()["run_id"], enc.json()["run_id"]]
        try:
            statuses = wait_all_terminal(stack.store, ids, timeout=30, what=stack.logs())
        except AssertionError as exc:
            raise RuntimeError(str(exc)) from None
        if [statuses[i] for i in ids] != ["succeeded", "succeeded"]:
            raise RuntimeError(f"runs did not succeed: {statuses}\n{stack.logs()}")
        [sent] = target.requests()
        if quote(ODD["B64_KEY"], safe="") not in sent.path or json.loads(sent.body) != {"token": ODD["QUOTED_TOKEN"]}:
            raise RuntimeError(f"the secrets were not sent as configured: {sent}")
        stored_query = stack.store.get_run(ids[0]).event.query
        if ODD["QUERY_VERIFY_TOKEN"] in stored_query or "redacted" not in stored_query:
            raise RuntimeError(f"the stored query is not redacted: {stored_query}")
        _ODD["places"] = _places(stack, ids, list(ODD_FLOWS))
    return dict(_ODD["places"])


def test_query_string_verification_token_never_reaches_the_logs(make_stack: Any, target: Target) -> None:
    places = _odd_places(make_stack, target)
    assert _leaks(places, {"QUERY_VERIFY_TOKEN": ODD["QUERY_VERIFY_TOKEN"]}) == []


def test_secrets_are_redacted_in_their_encoded_forms_too(make_stack: Any, target: Target) -> None:
    places = _odd_places(make_stack, target)
    assert _leaks(places, {k: ODD[k] for k in ("B64_KEY", "QUOTED_TOKEN")}, encoded=True) == []


# --- connections (issue 14): tokens, refresh tokens, keys, credentials and signatures --------------------------

CONNECTIONS_YAML = CONNECTIONS + """  ledger:
    type: api_key
    query: api_key
    key: ${LEDGER_API_KEY}
  billing:
    type: basic
    username: hookline
    password: ${BILLING_PASSWORD}
  partner:
    type: standard-webhooks
    secret: ${PARTNER_SIGNING_SECRET}
"""

CONNECTED_FLOW = """
id: connected
steps:
  - id: crm
    http: {url: AUTH/api/contacts, connection: crm, json: {ref: $.id}, timeout: 2s}
  - id: hub
    http: {url: AUTH/api/deals, connection: hub, json: {ref: $.id}, timeout: 2s}
  - id: ledger
    http: {url: TARGET/ledger, connection: ledger, query: {ref: $.id}, timeout: 2s}
  - id: billing
    http: {url: TARGET/billing, connection: billing, json: {ref: $.id}, timeout: 2s}
  - id: partner
    http: {url: TARGET/partner, connection: partner, json: {ref: $.id}, timeout: 2s}
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_connection_secret_in_database_logs_pages_or_api(backend: str, make_stack: Any, target: Target) -> None:
    """Two runs through five connections, the second after the provider revoked every access token (401,
    refresh, a rotated refresh token); then every place is searched for every value in every encoding."""
    import base64

    from tests.oauth_server import CLIENT_ID, leaks, start_auth_server

    auth = start_auth_server()
    try:
        auth.rotate = True
        env = {"CRM_TOKEN_URL": f"{auth.url}/token", "CRM_CLIENT_ID": CLIENT_ID, "CRM_CLIENT_SECRET": auth.client_secret,
               "HUB_REFRESH_TOKEN": auth.issue_refresh_token(), "LEDGER_API_KEY": "k3y+" + secrets.token_hex(8) + "/=",
               "BILLING_PASSWORD": _secret("BILLING_PASSWORD"),
               "PARTNER_SIGNING_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()}
        target.script["/ledger"] = [(200, {"echo": env["LEDGER_API_KEY"]})]
        flow = CONNECTED_FLOW.replace("AUTH", auth.url).replace("TARGET", target.url)
        stack = make_stack(backend, {"connected": flow, "connections": CONNECTIONS_YAML}, env=env)
        stack.start_web(workers=1)
        stack.start_worker("worker", threads=2)
        run_ids = []
        for ref in ("c1", "c2"):
            answer = httpx.post(f"{stack.url}/hooks/connected", json={"id": ref}, timeout=10)
            assert answer.status_code == 202, answer.text
            run_ids.append(answer.json()["run_id"])
            statuses = wait_all_terminal(stack.store, run_ids, timeout=30, what=stack.logs())
            assert [statuses[i] for i in run_ids] == ["succeeded"] * len(run_ids), stack.logs()
            auth.revoke_all()  # the second run meets 401s and refreshes both tokens
        # the values were really sent: their absence from storage is redaction
        assert len(auth.issued) == 4 and len(auth.issued_refresh) == 3
        assert {r.refresh_token for r in auth.token_requests if r.refresh_token} == set(auth.issued_refresh[:2])
        seen = target.requests()
        assert any(env["LEDGER_API_KEY"] in httpx.URL(s.path).params.get("api_key", "") for s in seen)
        signatures = [s.headers["webhook-signature"].removeprefix("v1,") for s in seen if s.path == "/partner"]
        basics = [s.headers["authorization"].removeprefix("Basic ") for s in seen if s.path == "/billing"]
        assert len(signatures) == 2 and basics
        places = _places(stack, run_ids, ["connected"])
        assert any(k.startswith("db connection_tokens") for k in places)
        assert "oauth2_refresh_token" in places["GET /flows"]  # the flows page lists them
        values = {"client secret": auth.client_secret, "ledger key": env["LEDGER_API_KEY"],
                  "billing password": env["BILLING_PASSWORD"], "partner secret": env["PARTNER_SIGNING_SECRET"],
                  "basic credentials": basics[0],
                  **{f"access token {i}": t for i, t in enumerate(auth.issued)},
                  **{f"refresh token {i}": t for i, t in enumerate(auth.issued_refresh)},
                  **{f"signature {i}": s for i, s in enumerate(signatures)}}
        assert leaks(places, values) == []
    finally:
        auth.stop()
