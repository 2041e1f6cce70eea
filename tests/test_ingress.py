"""POST /hooks/<flow>: the response contract, through Flask's test client on a real SQLite store."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from engine.model import RunStatus
from engine.presets import VerifyConfig, sign
from web import create_app

STRIPE = """
id: pay
trigger:
  verify: {provider: stripe, secret: "${STRIPE_SECRET}"}
  dedupe: $.id
  max_body: 2KiB
steps:
  - id: t
    transform: {id: $.id}
"""
TOKEN = """
id: tok
trigger:
  verify: {provider: token, header: X-Token, secret: "${HOOK_TOKEN}"}
  verify_token: "${HUB_TOKEN}"
steps:
  - id: t
    transform: {x: 1}
"""
OPEN = """
id: open
trigger:
  dedupe: header:X-Delivery
steps:
  - id: t
    transform: {x: 1}
"""
SECRET = "whsec_test_secret_123"


@pytest.fixture
def app_client(make_service: Any, sqlite_url: str) -> Any:
    svc, queue = make_service({"pay": STRIPE, "tok": TOKEN, "open": OPEN, "broken": "steps: ["}, sqlite_url,
                              env={"STRIPE_SECRET": SECRET, "HOOK_TOKEN": "tok-abcdef-123", "HUB_TOKEN": "hub-1"})
    app = create_app(svc.settings, service=svc)
    return app.test_client(), svc, queue


def signed(body: bytes, secret: str = SECRET, now: float | None = None) -> dict[str, str]:
    cfg = VerifyConfig("stripe", (secret,), {"tolerance": 300})
    return {**sign(cfg, body, env={}, now=now or time.time()), "Content-Type": "application/json"}


def test_signed_event_is_stored_before_202(app_client: Any) -> None:
    client, svc, queue = app_client
    body = b'{"id": "evt_1", "type": "x",   "spacing": "kept"}'
    resp = client.post("/hooks/pay", data=body, headers=signed(body))
    assert resp.status_code == 202 and resp.json["status"] == "queued"
    detail = svc.store.get_run(resp.json["run_id"])
    assert detail.event.body == body and detail.run.status is RunStatus.QUEUED
    assert any(k == "Stripe-Signature" for k, _ in detail.event.headers)
    assert queue.items == [(resp.json["run_id"], 0.0)]


def test_duplicate_answers_200_with_first_run(app_client: Any) -> None:
    client, svc, _ = app_client
    body = b'{"id": "evt_dup"}'
    first = client.post("/hooks/pay", data=body, headers=signed(body)).json["run_id"]
    again = client.post("/hooks/pay", data=body, headers=signed(body))
    assert again.status_code == 200 and again.json == {"ok": True, "run_id": first, "duplicate": True,
                                                        "run_url": again.json["run_url"]}
    h = {"X-Delivery": "d-1", "Content-Type": "application/json"}
    a = client.post("/hooks/open", data=b"{}", headers=h).json["run_id"]
    assert client.post("/hooks/open", data=b'{"other": 1}', headers=h).json["run_id"] == a


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda b, h: (b + b" ", h), "no signature matches"),
    (lambda b, h: (b, {**h, "Stripe-Signature": "garbage"}), "Stripe-Signature"),
    (lambda b, h: (b, {k: v for k, v in h.items() if k != "Stripe-Signature"}), "missing Stripe-Signature"),
    (lambda b, h: (b, signed(b, "whsec_wrong")), "no signature matches"),
    (lambda b, h: (b, signed(b, now=time.time() - 3600)), "tolerance"),
])
def test_unverified_requests_get_401_and_start_nothing(app_client: Any, mutate: Any, reason: str) -> None:
    client, svc, queue = app_client
    body = b'{"id": "evt_bad"}'
    data, headers = mutate(body, signed(body))
    resp = client.post("/hooks/pay", data=data, headers=headers)
    assert resp.status_code == 401 and reason in resp.json["error"]
    assert svc.store.list_runs().runs == [] and queue.items == []


def test_error_statuses(app_client: Any) -> None:
    client, svc, _ = app_client
    assert client.post("/hooks/nope", data=b"{}").status_code == 404
    broken = client.post("/hooks/broken", data=b"{}")
    assert broken.status_code == 503 and "broken.yaml:1" in broken.json["error"]
    big = b'{"id": "' + b"x" * 3000 + b'"}'
    assert client.post("/hooks/pay", data=big, headers=signed(big)).status_code == 413
    bad = b'{"id": '
    resp = client.post("/hooks/pay", data=bad, headers=signed(bad))
    assert resp.status_code == 400 and "not valid JSON" in resp.json["error"]
    assert set(resp.json) == {"ok", "error", "status"}
    assert svc.store.list_runs().runs == []


def test_missing_secret_is_503(app_client: Any) -> None:
    client, svc, _ = app_client
    svc.env = {}
    body = b'{"id": "e"}'
    resp = client.post("/hooks/pay", data=body, headers=signed(body))
    assert resp.status_code == 503 and "STRIPE_SECRET" in resp.json["error"]


def test_database_down_never_answers_2xx(make_service: Any, sqlite_url: str) -> None:
    from engine.store import RunStore

    svc, _ = make_service({"open": OPEN}, sqlite_url)
    svc.store = RunStore("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    client = create_app(svc.settings, service=svc).test_client()
    resp = client.post("/hooks/open", data=b"{}", headers={"Content-Type": "application/json"})
    assert resp.status_code == 503 and "retry" in resp.json["error"]


def test_token_header_is_redacted_before_storage(app_client: Any) -> None:
    client, svc, _ = app_client
    resp = client.post("/hooks/tok", data=b"{}", headers={"X-Token": "tok-abcdef-123", "Authorization": "Bearer zz9",
                                                          "Content-Type": "application/json"})
    assert resp.status_code == 202
    stored = json.dumps(svc.store.get_run(resp.json["run_id"]).event.headers)
    assert "tok-abcdef-123" not in stored and "zz9" not in stored and "[redacted]" in stored
    assert client.post("/hooks/tok", data=b"{}", headers={"X-Token": "wrong"}).status_code == 401


def test_handshakes_start_no_run(app_client: Any) -> None:
    client, svc, _ = app_client
    resp = client.get("/hooks/tok?hub.mode=subscribe&hub.challenge=abc123&hub.verify_token=hub-1")
    assert resp.status_code == 200 and resp.data == b"abc123"
    assert client.get("/hooks/tok?hub.challenge=abc&hub.verify_token=nope").status_code == 403
    body = json.dumps({"type": "url_verification", "challenge": "chal-9"}).encode()
    resp = client.post("/hooks/open", data=body, headers={"Content-Type": "application/json"})
    assert resp.json == {"challenge": "chal-9"}
    assert svc.store.list_runs().runs == []


def test_sandbox_records_and_answers_an_id(app_client: Any) -> None:
    client, svc, _ = app_client
    resp = client.post("/sandbox/crm/contacts", json={"email": "a@b.c"}, headers={"Authorization": "Bearer s"})
    assert resp.status_code == 200 and resp.json["id"].startswith("crm_")
    [seen] = svc.store.sandbox_list("crm")
    assert seen["path"] == "/contacts" and "a@b.c" in seen["body"] and "Bearer s" not in json.dumps(seen)
    assert client.post("/sandbox/crm/x", headers={"X-Sandbox-Status": "503"}).status_code == 503


def test_health(app_client: Any) -> None:
    client, _, _ = app_client
    assert client.get("/healthz").json == {"ok": True}
    assert client.get("/readyz").status_code == 200


# --------------------------------------------------------------------------- form deliveries and URL-signing presets

GITHUB = """
id: gh
trigger:
  verify: {provider: github, secret: "${GITHUB_SECRET}"}
steps:
  - id: t
    transform: {repo: "{{ event.repository.full_name }}", action: "{{ event.action }}"}
"""
TWILIO = """
id: sms
trigger:
  verify: {provider: twilio, secret: "${TWILIO_TOKEN}"}
steps:
  - id: t
    transform: {sender: "{{ event.From }}"}
"""
TWILIO_PROXIED = """
id: sms_public
trigger:
  verify: {provider: twilio, secret: "${TWILIO_TOKEN}", url: "https://hooks.example.com/hooks/sms"}
steps:
  - id: t
    transform: {sender: "{{ event.From }}"}
"""
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def form_client(make_service: Any, sqlite_url: str) -> Any:
    svc, queue = make_service({"gh": GITHUB, "sms": TWILIO, "sms_public": TWILIO_PROXIED}, sqlite_url,
                              env={"GITHUB_SECRET": "gh-secret", "TWILIO_TOKEN": "tw-token"})
    return create_app(svc.settings, service=svc).test_client(), svc, queue


def _github_headers(body: bytes, content_type: str) -> dict[str, str]:
    cfg = VerifyConfig("github", ("gh-secret",), {})
    return {**sign(cfg, body, env={}, now=time.time()), "Content-Type": content_type, "X-GitHub-Event": "issues"}


@pytest.mark.parametrize("content_type", [FORM, "application/json"])
def test_github_delivery_runs_on_the_payload_in_both_content_types(form_client: Any, content_type: str) -> None:
    from urllib.parse import urlencode

    client, svc, queue = form_client
    payload = json.dumps({"action": "opened", "repository": {"full_name": "octo/hello-world"}})
    body = urlencode({"payload": payload}).encode() if content_type == FORM else payload.encode()
    resp = client.post("/hooks/gh", data=body, headers=_github_headers(body, content_type))
    assert resp.status_code == 202, resp.json
    run_id = resp.json["run_id"]
    assert svc.execute_run(run_id) is RunStatus.SUCCEEDED
    detail = svc.store.get_run(run_id)
    assert detail.event.body == body  # stored as received: the signature covers these bytes
    assert detail.steps[-1].output == {"repo": "octo/hello-world", "action": "opened"}


def test_github_form_signed_over_a_re_encoded_body_is_refused(form_client: Any) -> None:
    client, svc, _ = form_client
    body = b"payload=%7B%22action%22%3A%22opened%22%7D"
    headers = _github_headers(b'payload={"action":"opened"}', FORM)  # signed over another spelling of the form
    assert client.post("/hooks/gh", data=body, headers=headers).status_code == 401
    assert svc.store.list_runs().runs == []


def test_deeply_nested_form_payload_is_400_with_a_reason(form_client: Any, make_service: Any,
                                                         sqlite_url: str) -> None:
    from urllib.parse import urlencode

    client, svc, queue = form_client
    body = urlencode({"payload": "[" * 10_000 + "]" * 10_000}).encode()
    resp = client.post("/hooks/gh", data=body, headers=_github_headers(body, FORM))
    assert resp.status_code == 400 and "nested too deeply" in resp.json["error"]
    open_svc, _ = make_service({"open": OPEN}, sqlite_url)
    open_client = create_app(open_svc.settings, service=open_svc).test_client()
    resp = open_client.post("/hooks/open", data=body, headers={"Content-Type": FORM})
    assert resp.status_code == 400 and "nested too deeply" in resp.json["error"]
    assert svc.store.list_runs().runs == [] and queue.items == [] and open_svc.store.list_runs().runs == []


def test_twilio_signs_the_url_as_received_or_the_configured_one(form_client: Any) -> None:
    from twilio.request_validator import RequestValidator

    client, svc, _ = form_client
    form = {"From": "+15005550006", "Body": "hi"}
    validator = RequestValidator("tw-token")
    ok = client.post("/hooks/sms?x=1", data=form,
                     headers={"X-Twilio-Signature": validator.compute_signature("http://localhost/hooks/sms?x=1", form)})
    assert ok.status_code == 202, ok.json
    assert svc.execute_run(ok.json["run_id"]) is RunStatus.SUCCEEDED
    assert svc.store.get_run(ok.json["run_id"]).steps[-1].output == {"sender": "+15005550006"}
    public = validator.compute_signature("https://hooks.example.com/hooks/sms", form)
    assert client.post("/hooks/sms", data=form, headers={"X-Twilio-Signature": public}).status_code == 401
    assert client.post("/hooks/sms_public", data=form, headers={"X-Twilio-Signature": public}).status_code == 202
