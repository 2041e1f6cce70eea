"""POST /hooks/<flow>: the response contract, through Flask's test client on a real SQLite store."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from engine.model import RunStatus
from engine.verify import VerifyConfig, sign
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
