"""Login, Bearer tokens, CSRF, the open-mode banner and the security headers."""

from __future__ import annotations

from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from flask.testing import FlaskClient

from tests.ui_helpers import Hookline, make_hookline

PASSWORD = "correct horse battery staple"
TOKEN = "tok_live_123"


@pytest.fixture
def h(tmp_path: Path) -> Hookline:
    return make_hookline(tmp_path, admin_password=PASSWORD, api_token=TOKEN)


def login_csrf(client: FlaskClient) -> str:
    soup = BeautifulSoup(client.get("/login").get_data(as_text=True), "html.parser")
    return str(soup.select_one("form.login input[name=csrf_token]")["value"])


def log_in(client: FlaskClient, password: str = PASSWORD, next_url: str = "/runs") -> tuple[int, str]:
    resp = client.post("/login", data={"password": password, "csrf_token": login_csrf(client), "next": next_url})
    return resp.status_code, resp.headers.get("Location", "")


def test_pages_and_api_need_a_login(h: Hookline) -> None:
    resp = h.client.get("/runs?status=failed")
    assert resp.status_code == 302 and resp.headers["Location"] == "/login?next=/runs?status%3Dfailed"
    assert h.json("/runs.json", 401)["error"].startswith("login required")
    assert h.json("/api/runs", 401) == {
        "ok": False, "status": 401,
        "error": "login required: sign in at /login, or send Authorization: Bearer <HOOKLINE_API_TOKEN>",
    }
    assert h.client.post("/runs/1/replay").status_code == 401


def test_wrong_password_is_rejected_and_right_one_logs_in(h: Hookline) -> None:
    status, _ = log_in(h.client, "wrong")
    assert status == 401
    assert "Wrong password." in h.client.post("/login", data={"password": "x", "csrf_token": login_csrf(h.client)})\
        .get_data(as_text=True)
    assert h.client.get("/runs").status_code == 302
    status, location = log_in(h.client)
    assert status == 302 and location == "/runs"
    assert h.client.get("/runs").status_code == 200
    assert h.json("/api/runs")["runs"] == []
    soup = h.html("/runs")
    assert soup.select_one(".banner.warn") is None, "no open-instance warning once a password is set"
    resp = h.client.post("/logout", data={"csrf_token": h.csrf()})
    assert resp.status_code == 302 and h.client.get("/runs").status_code == 302


def test_login_redirects_only_within_the_site(h: Hookline) -> None:
    for target in ("//evil.test/x", "https://evil.test/", "/\\evil.test"):
        assert log_in(h.client, next_url=target) == (302, "/flows")


def test_session_cookie_flags(h: Hookline) -> None:
    h.client.get("/login")
    cookie = h.client.get_cookie("session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax" and not cookie.secure
    https = h.app.test_client()
    https.get("/login", base_url="https://hookline.test")
    secure = https.get_cookie("session", domain="hookline.test")
    assert secure is not None and secure.secure
    proxied = h.app.test_client()
    resp = proxied.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in resp.headers["Set-Cookie"] and "HttpOnly" in resp.headers["Set-Cookie"]


def test_bearer_token_for_the_api(h: Hookline) -> None:
    run_id = h.send({"id": "e1", "order_id": "o", "email": "a@b.c", "amount": 0})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert h.json("/api/runs", headers=auth)["runs"][0]["id"] == run_id
    created = h.client.post(f"/api/runs/{run_id}/replay", headers=auth)  # no cookie, so no CSRF needed
    assert created.status_code == 201
    wrong = h.client.get("/api/runs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.get_json()["error"].startswith("invalid bearer token")
    assert h.client.get("/runs", headers=auth).status_code == 302, "the token opens the API, not the pages"


def test_bearer_is_refused_when_no_token_is_configured(tmp_path: Path) -> None:
    h = make_hookline(tmp_path, admin_password=PASSWORD)
    assert h.client.get("/api/runs", headers={"Authorization": "Bearer "}).status_code == 401
    assert h.client.get("/api/runs", headers={"Authorization": "Bearer x"}).status_code == 401


def test_csrf_on_forms_and_browser_api_calls(h: Hookline) -> None:
    run_id = h.send({"id": "e1", "order_id": "o", "email": "a@b.c", "amount": 0})
    log_in(h.client)
    missing = h.client.post(f"/runs/{run_id}/replay", data={"version": "current"})
    assert missing.status_code == 400 and b"CSRF token missing" in missing.data
    wrong = h.client.post(f"/runs/{run_id}/replay", data={"csrf_token": "forged"})
    assert wrong.status_code == 400 and b"CSRF token invalid" in wrong.data
    token = h.csrf()
    assert h.client.post(f"/runs/{run_id}/replay", data={"csrf_token": token}).status_code == 302
    assert h.client.post("/runs/replay", data={"flow": "orders", "max_id": "1"}).status_code == 400

    api = h.client.post(f"/api/runs/{run_id}/replay", json={})
    assert api.status_code == 400 and api.get_json()["error"].startswith("CSRF token missing")
    ok = h.client.post(f"/api/runs/{run_id}/replay", json={}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201
    assert h.client.post("/logout").status_code == 400


def test_login_form_itself_needs_csrf(h: Hookline) -> None:
    resp = h.client.post("/login", data={"password": PASSWORD})
    assert resp.status_code == 400
    assert h.client.get("/runs").status_code == 302


def test_ingress_health_and_sandbox_receiver_stay_open(h: Hookline) -> None:
    resp = h.client.post("/hooks/orders", json={"id": "e9", "order_id": "o", "email": "a@b.c", "amount": 0})
    assert resp.status_code == 202
    assert h.client.get("/healthz").status_code == 200
    assert h.client.get("/readyz").status_code == 200
    assert h.client.post("/sandbox/crm/contacts", json={"a": 1}).status_code == 200
    with h.client.get("/static/app.css") as css:  # a file response: closed, or its file stays open
        assert css.status_code == 200
    assert h.client.get("/sandbox").status_code == 302, "the sandbox page is not the receiver"
    assert h.client.get("/sandbox.json").status_code == 401


def test_open_mode_shows_the_warning_and_still_checks_csrf(tmp_path: Path) -> None:
    h = make_hookline(tmp_path)
    soup = h.html("/")
    warning = soup.select_one(".banner.warn").get_text(" ", strip=True)
    assert "anyone who can reach this port can see and replay runs" in warning
    assert h.client.get("/login").status_code == 302
    run_id = h.send({"id": "e1", "order_id": "o", "email": "a@b.c", "amount": 0})
    assert h.client.post(f"/runs/{run_id}/replay").status_code == 400
    assert h.client.post(f"/api/runs/{run_id}/replay").status_code == 400


def test_security_headers_on_pages(tmp_path: Path) -> None:
    h = make_hookline(tmp_path)
    resp = h.client.get("/runs")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"
