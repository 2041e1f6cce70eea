"""Issue 16 items 9-12 against the real app on a real SQLite store: huge run ids, the sandbox receiver,
sessions after logout or idleness, and the Host check of the open (no-password) UI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_auth import PASSWORD, log_in
from tests.ui_helpers import make_hookline

HUGE = str(2**63)


# --- 9: run ids beyond what a database column holds ---------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", f"/api/runs/{HUGE}"), ("POST", f"/api/runs/{HUGE}/replay"), ("POST", f"/api/runs/{HUGE}/dry-run"),
    ("POST", f"/api/runs/{HUGE}/retry"), ("GET", f"/runs/{HUGE}"), ("GET", f"/runs/{HUGE}.json"),
    ("GET", f"/api/runs/{2**64 + 5}"),
])
def test_a_run_id_above_2_63_is_a_404(tmp_path: Path, method: str, path: str) -> None:
    h = make_hookline(tmp_path, api_token="tok")
    resp = h.client.open(path, method=method, json={}, headers={"Authorization": "Bearer tok"})
    assert resp.status_code == 404, resp.get_data(as_text=True)[:300]


def test_the_largest_row_id_is_still_looked_up(tmp_path: Path) -> None:
    h = make_hookline(tmp_path)
    resp = h.client.get(f"/api/runs/{2**63 - 1}")
    assert resp.status_code == 404 and "no run with id" in resp.get_json()["error"]


# --- 10: the sandbox receiver ----------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["abc", "42", "99", "600", "1e3", "-500", "٥٠٣"])
def test_a_sandbox_status_that_is_not_an_http_status_is_a_400(tmp_path: Path, status: str) -> None:
    h = make_hookline(tmp_path)
    for resp in (h.client.post("/sandbox/crm/x", headers={"X-Sandbox-Status": status}),
                 h.client.post("/sandbox/crm/x", query_string={"sandbox_status": status})):
        assert resp.status_code == 400 and "200 to 599" in resp.get_json()["error"]
    assert h.store.sandbox_list() == []
    assert h.client.post("/sandbox/crm/x", headers={"X-Sandbox-Status": "503"}).status_code == 503


def test_a_large_sandbox_body_is_refused_and_not_stored(tmp_path: Path) -> None:
    h = make_hookline(tmp_path)
    assert h.client.post("/sandbox/crm/x", data=b"x" * (10 * 1024 * 1024)).status_code == 413
    assert h.store.sandbox_list() == []
    assert h.client.post("/sandbox/crm/x", data=b"x" * 1000).status_code == 200
    assert len(h.store.sandbox_list()) == 1


def test_the_sandbox_is_off_when_disabled(tmp_path: Path) -> None:
    h = make_hookline(tmp_path, sandbox=False)
    assert h.client.post("/sandbox/crm/x", json={}).status_code == 404


def test_serving_beyond_localhost_turns_the_sandbox_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.app.processes import listening_env

    monkeypatch.delenv("HOOKLINE_SANDBOX", raising=False)
    monkeypatch.delenv("HOOKLINE_TRUSTED_HOSTS", raising=False)
    assert listening_env("0.0.0.0") == {"HOOKLINE_SANDBOX": "0"}
    assert listening_env("10.1.2.3")["HOOKLINE_TRUSTED_HOSTS"] == "localhost,127.0.0.1,::1,10.1.2.3"
    assert "HOOKLINE_SANDBOX" not in listening_env("127.0.0.1")
    monkeypatch.setenv("HOOKLINE_SANDBOX", "1")
    assert "HOOKLINE_SANDBOX" not in listening_env("0.0.0.0")


# --- 11: sessions end at logout (every copy of the cookie) and when idle ---------------------------------------

def _session_cookie(client: object) -> str:
    cookie = client.get_cookie("session")  # type: ignore[attr-defined]
    assert cookie is not None
    return str(cookie.value)


def test_a_saved_cookie_is_dead_after_logout(tmp_path: Path) -> None:
    h = make_hookline(tmp_path, admin_password=PASSWORD)
    assert log_in(h.client)[0] == 302
    saved = _session_cookie(h.client)
    assert h.client.get("/runs.json").status_code == 200
    csrf = h.client.get("/runs.json").get_json().get("csrf_token") or _csrf(h)
    assert h.client.post("/logout", headers={"X-CSRF-Token": csrf}).status_code == 302
    replay = h.app.test_client()
    replay.set_cookie("session", saved)
    assert replay.get("/runs.json").status_code == 401
    assert replay.get("/api/runs").status_code == 401


def _csrf(h: object) -> str:
    with h.client.session_transaction() as sess:  # type: ignore[attr-defined]
        return str(sess["csrf"])


def test_an_idle_session_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = make_hookline(tmp_path, admin_password=PASSWORD, session_idle_s=600.0)
    registry = h.app.extensions["hookline_sessions"]
    now = [1_000_000.0]
    monkeypatch.setattr(registry, "clock", lambda: now[0])
    assert log_in(h.client)[0] == 302
    now[0] += 599  # used within the limit: still alive, and this use moves the limit on
    assert h.client.get("/runs.json").status_code == 200
    now[0] += 599
    assert h.client.get("/runs.json").status_code == 200
    now[0] += 601
    assert h.client.get("/runs.json").status_code == 401


def test_logging_in_again_ends_the_previous_session(tmp_path: Path) -> None:
    h = make_hookline(tmp_path, admin_password=PASSWORD)
    log_in(h.client)
    first = _session_cookie(h.client)
    log_in(h.client)
    old = h.app.test_client()
    old.set_cookie("session", first)
    assert old.get("/runs.json").status_code == 401 and h.client.get("/runs.json").status_code == 200


# --- 12: the open UI answers only trusted Host names ----------------------------------------------------------

@pytest.mark.parametrize("host", ["rebind.attacker.test", "rebind.attacker.test:8000", "127.0.0.1.attacker.test",
                                  "localhost.attacker.test", "[::2]:8000", ""])
def test_an_untrusted_host_gets_no_page_and_no_csrf_token(tmp_path: Path, host: str) -> None:
    h = make_hookline(tmp_path)
    for path in ("/", "/runs", "/runs.json", "/api/runs", "/flows"):
        resp = h.client.get(path, headers={"Host": host})
        assert resp.status_code == 400, (path, resp.status_code)
        assert "untrusted Host" in resp.get_data(as_text=True)
        assert "csrf" not in resp.get_data(as_text=True).lower().replace("untrusted", "")
        assert h.client.get_cookie("session") is None


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST.",
                                  "hookline.internal"])
def test_trusted_hosts_are_served(tmp_path: Path, host: str) -> None:
    h = make_hookline(tmp_path, trusted_hosts=("localhost", "127.0.0.1", "::1", "*.internal"))
    assert h.client.get("/runs.json", headers={"Host": host}).status_code == 200


def test_hooks_and_health_answer_any_host_and_a_password_lifts_the_check(tmp_path: Path) -> None:
    h = make_hookline(tmp_path)
    assert h.client.get("/healthz", headers={"Host": "hooks.example.com"}).status_code == 200
    assert h.client.post("/hooks/orders", json={"id": "o1"}, headers={"Host": "hooks.example.com"}).status_code != 400
    (tmp_path / "locked").mkdir()
    locked = make_hookline(tmp_path / "locked", admin_password=PASSWORD)
    assert locked.client.get("/runs.json", headers={"Host": "ui.example.com"}).status_code == 401
