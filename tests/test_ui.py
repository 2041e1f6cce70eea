"""The operator pages, asserted mostly through their JSON twins, with a few HTML probes."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import event

from engine.flowtest import run_fixture
from engine.model import Flow
from tests.ui_helpers import BROKEN_FLOW, ORDERS_FLOW, REJECTED_AMOUNT, SECRET, Hookline, make_hookline, serve_target
from web import context


@pytest.fixture
def h(tmp_path: Path, httpserver: HTTPServer) -> Hookline:
    return make_hookline(tmp_path, serve_target(httpserver), flows={"orders": ORDERS_FLOW, "broken": BROKEN_FLOW})


def order(n: int, amount: int = 5, **extra: Any) -> dict[str, Any]:
    return {"id": f"evt_{n}", "order_id": f"o-{n}", "email": f"Buyer{n}@Example.com", "amount": amount, **extra}


# --- flows ----------------------------------------------------------------------------------------


def test_flows_page_lists_loaded_and_broken_flows_with_stats(h: Hookline) -> None:
    h.send(order(1))
    h.send(order(2, amount=REJECTED_AMOUNT))
    data = h.json("/flows.json")
    flows = {f["id"]: f for f in data["flows"]}
    orders, broken = flows["orders"], flows["broken"]
    assert orders["ok"] and orders["trigger_url"].endswith("/hooks/orders")
    assert orders["runs_24h"] == 2 and orders["counts_24h"] == {"succeeded": 1, "failed": 1}
    assert orders["success_rate"] == 0.5
    assert orders["last_failure"]["id"] == 2
    assert sum(orders["volume"]) == 2 and len(orders["volume"]) == 25
    assert [s["id"] for s in orders["steps"]] == ["payment", "crm", "invoice"]
    assert not broken["ok"] and broken["errors"][0]["line"] == 6
    assert "broken.yaml:6" in broken["errors"][0]["text"]
    assert h.json("/api/flows") == data

    soup = h.html("/")
    assert soup.select_one("section.card.broken") is not None
    assert "broken.yaml:6" in soup.select_one("section.card.broken ul.problems").get_text()
    assert soup.select("svg.spark rect"), "the volume chart draws a bar for the hour with runs"
    assert soup.select_one("button.copy[data-copy]") is not None


def test_flow_detail_shows_source_with_errors_at_their_lines(h: Hookline) -> None:
    data = h.json("/flows/broken.json")
    assert data["flow"]["ok"] is False
    marked = [line for line in data["source"] if line["errors"]]
    assert [line["n"] for line in marked] == [5, 6] and "nosuchstep" in marked[1]["text"]
    assert "unknown key 'nosuchstep'" in marked[1]["errors"][0]
    soup = h.html("/flows/broken")
    assert soup.select_one("tr#L6.error .line-error") is not None

    h.send(order(1))
    ok = h.json("/flows/orders.json")
    assert ok["flow"]["verify"] is None and ok["flow"]["warnings"] == []
    assert [r["id"] for r in ok["runs"]] == [1]
    assert h.json("/flows/nope.json", 404) == {"ok": False, "error": "no flow with id 'nope'", "status": 404}


def test_flow_warns_about_unset_environment_variables(tmp_path: Path) -> None:
    h = make_hookline(tmp_path, env={})
    warnings = h.json("/flows/orders.json")["flow"]["warnings"]
    assert "step crm: environment variable CRM_SECRET is not set" in warnings


# --- runs list --------------------------------------------------------------------------------------


def test_runs_newest_first_with_filters_and_keyset_pages(h: Hookline) -> None:
    for n in range(1, 6):
        h.send(order(n, amount=REJECTED_AMOUNT if n in (2, 4) else 5))
    data = h.json("/runs.json")
    assert [r["id"] for r in data["runs"]] == [5, 4, 3, 2, 1]
    assert data["max_id"] == 5 and data["next_cursor"] is None and data["live"] is True

    assert [r["id"] for r in h.json("/runs.json?status=failed")["runs"]] == [4, 2]
    assert [r["id"] for r in h.json("/runs.json?q=evt_3")["runs"]] == [3]
    assert [r["id"] for r in h.json("/runs.json?q=order:o-4")["runs"]] == [4]
    assert [r["id"] for r in h.json("/runs.json?q=Buyer1@")["runs"]] == [1]
    assert h.json("/runs.json?flow=broken")["runs"] == []

    first = h.json("/runs.json?limit=2")
    assert [r["id"] for r in first["runs"]] == [5, 4] and first["next_cursor"] == 4
    second = h.json(f"/runs.json?limit=2&cursor={first['next_cursor']}")
    assert [r["id"] for r in second["runs"]] == [3, 2] and second["live"] is False
    assert [r["id"] for r in h.json("/runs.json?after=3")["runs"]] == [5, 4]

    soup = h.html("/runs?limit=2")
    assert [tr["data-id"] for tr in soup.select("table.runs tbody tr")] == ["5", "4"]
    assert soup.select_one("table.runs")["data-after"] == "5"
    assert soup.select_one("nav.pager a")["href"].endswith("cursor=4")


def test_runs_time_range_accepts_iso_epoch_and_ages(h: Hookline) -> None:
    h.send(order(1))
    now = time.time()
    assert len(h.json(f"/runs.json?since={now - 60:.0f}")["runs"]) == 1
    assert len(h.json("/runs.json?since=1h")["runs"]) == 1
    assert h.json(f"/runs.json?until={now - 3600:.0f}")["runs"] == []
    assert h.json("/runs.json?since=2000-01-01T00:00:00Z&until=2000-01-02")["runs"] == []
    bad = h.json("/runs.json?since=yesterday", 400)
    assert bad["status"] == 400 and bad["error"].startswith("since: expected ISO-8601")
    assert h.json("/runs.json?status=done", 400)["error"].startswith("status: expected one of")
    assert h.json("/runs.json?limit=0", 400)["error"] == "limit: must be between 1 and 500, got 0"


def test_runs_page_never_counts_or_offsets(h: Hookline) -> None:
    for n in range(1, 4):
        h.send(order(n))
    statements: list[str] = []
    offsets: list[Any] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        statements.append(statement.upper())
        if "OFFSET ?" in statement:  # SQLAlchemy's SQLite dialect always writes LIMIT ? OFFSET ?, with 0
            offsets.append(parameters[-1])

    event.listen(h.store.engine, "before_cursor_execute", seen)
    h.html("/runs?limit=2&cursor=3")
    h.json("/runs.json?status=succeeded&q=evt_1")
    assert statements and not [s for s in statements if "COUNT(" in s]
    assert set(offsets) <= {0}
    statements.clear()
    h.html("/runs/1")
    selects = [s for s in statements if s.lstrip().startswith("SELECT")]
    assert len(selects) <= 6, selects


# --- run detail -------------------------------------------------------------------------------------


def test_run_detail_shows_steps_requests_and_the_inbound_request(h: Hookline) -> None:
    run_id = h.send(order(1, note="first order"))
    data = h.json(f"/runs/{run_id}.json")
    assert data["run"]["status"] == "succeeded" and data["run"]["index"] == {"order": "o-1"}
    steps = {s["step_id"]: s for s in data["steps"]}
    assert list(steps) == ["payment", "crm", "invoice"]
    assert steps["payment"]["output"] == {"email": "buyer1@example.com", "amount": 5, "note": "first order"}
    crm = steps["crm"]
    assert crm["request"]["method"] == "POST" and crm["request"]["url"].endswith("/contacts?api_key=${CRM_SECRET}")
    assert crm["response"]["status"] == 201 and crm["response"]["body_json"] == {"id": "c_42"}
    assert crm["duration_ms"] is not None and crm["attempt"] == 1
    assert data["event"]["method"] == "POST" and data["event"]["body_json"]["id"] == "evt_1"
    assert ["Content-Type", "application/json"] in data["event"]["headers"]
    assert data["actions"]["retry"] is None and data["actions"]["fixture"].endswith("/fixture.yaml")
    assert h.json(f"/api/runs/{run_id}") == data

    soup = h.html(f"/runs/{run_id}")
    assert len(soup.select("ol.timeline li.step")) == 3
    assert soup.select_one('link[rel="alternate"]')["href"] == f"/runs/{run_id}.json"
    assert soup.select_one("li.step pre[data-json]") is not None
    assert h.json("/runs/999.json", 404)["error"] == "no run with id 999"
    assert "no run with id 999" in h.html("/runs/999", 404).select_one(".error-page").get_text()


def test_failed_run_says_why_and_retry_keeps_succeeded_steps(h: Hookline, httpserver: HTTPServer) -> None:
    run_id = h.send(order(1, amount=REJECTED_AMOUNT))
    data = h.json(f"/runs/{run_id}.json")
    invoice = data["steps"][-1]
    assert data["run"]["status"] == "failed"
    assert invoice["error"]["type"] == "HttpStepError" and "answered 422" in invoice["error"]["message"]
    assert invoice["response"]["body_json"] == {"error": "amount 13 is not allowed on this ledger"}
    assert "Traceback" not in str(data)
    soup = h.html(f"/runs/{run_id}")
    assert "answered 422" in soup.select_one(".alert .message").get_text()
    assert soup.select_one("li.step.s-failed details")["open"] is not None

    contacts_before = len([r for r, _ in httpserver.log if r.path == "/contacts"])
    resp = h.client.post(f"/runs/{run_id}/retry", data={"csrf_token": h.csrf()})
    assert resp.status_code == 302
    child_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    h.execute_enqueued()
    child = h.json(f"/runs/{child_id}.json")
    assert child["parent"]["id"] == run_id and child["run"]["replay_kind"] == "retry"
    kept = [s["step_id"] for s in child["steps"] if s["kept_from_parent"]]
    assert kept == ["payment", "crm"]
    assert len([r for r, _ in httpserver.log if r.path == "/contacts"]) == contacts_before, "crm was not called again"
    assert [c["id"] for c in h.json(f"/runs/{run_id}.json")["children"]] == [child_id]


def test_replay_current_and_original_version(h: Hookline) -> None:
    run_id = h.send(order(1))
    token = h.csrf()
    resp = h.client.post(f"/runs/{run_id}/replay", data={"csrf_token": token, "version": "current"})
    assert resp.status_code == 302
    h.execute_enqueued()
    first = int(resp.headers["Location"].rsplit("/", 1)[1])
    assert h.json(f"/runs/{first}.json")["run"]["status"] == "succeeded"

    (h.flows_dir / "orders.yaml").write_text(ORDERS_FLOW.replace("Orders to CRM", "Orders (v2) to CRM"))
    h.svc.catalog.refresh(force=True)
    detail = h.json(f"/runs/{run_id}.json")
    assert detail["flow"]["ran_current_version"] is False
    resp = h.client.post(f"/runs/{run_id}/replay", data={"csrf_token": token, "version": "original"})
    second = int(resp.headers["Location"].rsplit("/", 1)[1])
    assert h.json(f"/runs/{second}.json")["run"]["flow_version"] == detail["run"]["flow_version"]
    resp = h.client.post(f"/runs/{run_id}/retry", data={"csrf_token": token})
    assert resp.status_code == 409


def test_dry_run_shows_requests_and_sends_nothing(h: Hookline, httpserver: HTTPServer) -> None:
    run_id = h.send(order(1))
    sent = len(httpserver.log)
    data = h.json(f"/runs/{run_id}/dry-run.json")
    assert len(httpserver.log) == sent
    steps = {s["step_id"]: s for s in data["steps"]}
    assert steps["crm"]["request"]["url"].endswith("/contacts?api_key=${CRM_SECRET}")
    # calls the run made answer as they answered then (Service.dry_run), so branches follow the same path
    assert steps["crm"]["output"]["response"]["status"] == 201
    soup = h.html(f"/runs/{run_id}/dry-run")
    assert "no request was sent" in soup.select_one(".banner.info").get_text()


# --- fixture export ---------------------------------------------------------------------------------


@pytest.mark.parametrize("amount,status", [(5, "succeeded"), (REJECTED_AMOUNT, "failed")])
def test_exported_fixture_passes_against_the_flow(h: Hookline, tmp_path: Path, amount: int, status: str) -> None:
    run_id = h.send(order(1, amount=amount))
    resp = h.client.get(f"/runs/{run_id}/fixture.yaml")
    assert resp.status_code == 200 and resp.mimetype == "application/yaml"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="orders-run-{run_id}.yaml"'
    text = resp.get_data(as_text=True)
    assert SECRET not in text and f"status: {status}" in text
    path = tmp_path / "fixture.yaml"
    path.write_text(text)
    flow = h.svc.catalog.get("orders")
    assert isinstance(flow, Flow)
    result = run_fixture(flow, path)
    assert result.passed, result.problems


def test_fixture_of_an_unfinished_run_is_refused(h: Hookline) -> None:
    run_id = h.send(order(1), run=False)
    resp = h.client.get(f"/runs/{run_id}/fixture.yaml")
    assert resp.status_code == 409 and b"queued" in resp.data


# --- bulk replay ------------------------------------------------------------------------------------


def test_bulk_replay_confirms_the_count_then_replays(h: Hookline) -> None:
    for n in range(1, 5):
        h.send(order(n, amount=REJECTED_AMOUNT if n % 2 else 5))
    confirm = h.json("/runs/replay.json?status=failed&since=6h")
    assert confirm["count"] == 2 and confirm["first_ids"] == [1, 3]
    soup = h.html("/runs/replay?status=failed&since=6h")
    assert soup.h1.get_text(strip=True) == "Replay 2 runs?"
    form = soup.select_one("form.confirm")
    fields = {i["name"]: i.get("value") for i in form.select("input[type=hidden]")}
    assert fields["status"] == "failed" and fields["max_id"] == "3"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", fields["since"]), "the age became a fixed time"

    h.send(order(9, amount=REJECTED_AMOUNT))  # arrives after the confirmation: not included
    resp = h.client.post("/runs/replay", data=fields)
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/runs")
    replays = [r for r in h.json("/runs.json")["runs"] if r["replay_kind"] == "replay"]
    assert sorted(r["parent_run_id"] for r in replays) == [1, 3]
    assert "Replayed 2 run(s)" in h.html("/runs").select_one(".banner.ok").get_text()


def test_bulk_replay_is_capped_and_needs_a_filter(h: Hookline, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(1, 4):
        h.send(order(n))
    assert h.json("/runs/replay.json", 400)["error"].startswith("bulk replay needs a filter")
    monkeypatch.setattr(context, "BULK_CAP", 2)
    error = h.json("/runs/replay.json?flow=orders", 400)["error"]
    assert error.startswith("more than 2 runs match; bulk replay takes at most 2 at a time: narrow the filter")


# --- untrusted data and secrets --------------------------------------------------------------------


XSS = "<script>alert(1)</script>"
JS_URL = "javascript:alert(document.cookie)"


def test_event_data_renders_inert(h: Hookline) -> None:
    run_id = h.send({"id": f"evt_{XSS}", "order_id": XSS, "email": f"x{XSS}@e.com", "amount": 5,
                     "note": JS_URL, "homepage": JS_URL})
    for path in ("/runs", f"/runs/{run_id}", f"/runs/{run_id}/dry-run", "/flows/orders", "/sandbox"):
        resp = h.client.get(path)
        html = resp.get_data(as_text=True)
        assert resp.status_code == 200
        assert "<script>alert" not in html, path
        assert not re.search(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", html, re.I), path
        assert all(s.get("src") for s in _soup(html).find_all("script")), f"{path}: inline script"
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    text = _soup(h.client.get("/runs").get_data(as_text=True)).select_one("td.key").get_text()
    assert text == f"evt_{XSS}", "the payload shows literally, as text"


def test_secret_values_appear_nowhere(h: Hookline, httpserver: HTTPServer) -> None:
    ok = h.send(order(1))
    failed = h.send(order(2, amount=REJECTED_AMOUNT))
    assert any(SECRET in (r.query_string.decode() + str(dict(r.headers))) for r, _ in httpserver.log), \
        "the flow really sent the secret to the target"
    csrf = h.csrf()
    h.client.post(f"/runs/{failed}/retry", data={"csrf_token": csrf})
    h.execute_enqueued()
    bodies = []
    for path in ("/", "/flows.json", "/flows/orders", "/flows/orders.json", "/runs", "/runs.json", f"/runs/{ok}",
                 f"/runs/{ok}.json", f"/runs/{failed}", f"/runs/{failed}.json", f"/runs/{ok}/dry-run",
                 f"/runs/{ok}/dry-run.json", f"/runs/{ok}/fixture.yaml", f"/runs/{failed}/fixture.yaml", "/sandbox",
                 "/sandbox.json", "/api/flows", "/api/runs", f"/api/runs/{ok}", "/runs/replay?flow=orders"):
        resp = h.client.get(path)
        assert resp.status_code == 200, path
        bodies.append((path, resp.get_data(as_text=True)))
    api = h.client.post(f"/api/runs/{ok}/dry-run", headers={"X-CSRF-Token": csrf})
    bodies.append(("dry-run api", api.get_data(as_text=True)))
    leaks = [path for path, body in bodies if SECRET in body]
    assert leaks == []


def test_sandbox_page_lists_received_requests(h: Hookline) -> None:
    h.client.post("/sandbox/crm/contacts?x=1", json={"email": "a@b.c"}, headers={"Authorization": "Bearer t0k"})
    data = h.json("/sandbox.json")
    assert [(r["name"], r["method"], r["path"]) for r in data["requests"]] == [("crm", "POST", "/contacts?x=1")]
    assert data["requests"][0]["body_json"] == {"email": "a@b.c"}
    assert ["Authorization", "[redacted]"] in data["requests"][0]["headers"]
    assert h.json("/sandbox.json?name=other")["requests"] == []
    assert h.html("/sandbox").select_one("ol.timeline code").get_text() == "/sandbox/crm/contacts?x=1"


def test_sandbox_page_is_off_with_the_receiver(tmp_path: Path) -> None:
    h = make_hookline(tmp_path, sandbox=False)
    assert h.json("/sandbox.json", 404)["error"].startswith("the sandbox receiver is off")
    assert h.html("/runs").find("a", string="Sandbox") is None


def _soup(html: str) -> Any:
    from bs4 import BeautifulSoup

    return BeautifulSoup(html, "html.parser")


# --- control flow on the run page -------------------------------------------------------------------

SHOP_FLOW = """\
id: shop
trigger: {dedupe: $.id}
steps:
  - id: lines
    foreach: $.line_items
    key: "{{ item.sku }}"
    steps:
      - id: decrement
        http: {url: "${TARGET_URL}/decrement", json: {sku: "{{ item.sku }}"},
               retry: {max_attempts: 3, initial: 10ms, max_delay: 20ms}}
  - id: route
    switch:
      cases:
        - when: event.status == "paid"
          steps:
            - id: invoice
              http: {url: "${TARGET_URL}/invoices", json: {amount: 1}, retry: {max_attempts: 1}}
      default:
        - id: unknown
          fail: "unknown status {{ event.status }}"
on_failure:
  - id: alert
    http: {url: "${TARGET_URL}/alerts", json: {step: "{{ error.step }}"}}
"""


GATE_FLOW = """\
id: gate
steps:
  - id: only_paid
    filter: event.status == "paid"
  - id: note
    transform: {ok: true}
"""


@pytest.fixture
def shop(tmp_path: Path, httpserver: HTTPServer) -> Hookline:
    from werkzeug import Request, Response

    seen: dict[str, int] = {}

    def decrement(request: Request) -> Response:
        sku = request.get_json()["sku"]
        seen[sku] = seen.get(sku, 0) + 1
        if seen[sku] == 1 and sku in ("bad", "flaky"):  # fail once: a retry of the run succeeds
            return Response('{"error": "out of stock"}', status=409 if sku == "bad" else 503,
                            content_type="application/json")
        return Response('{"left": 3}', status=200, content_type="application/json")

    httpserver.expect_request("/decrement", method="POST").respond_with_handler(decrement)
    httpserver.expect_request("/alerts", method="POST").respond_with_json({"ok": True})
    return make_hookline(tmp_path, serve_target(httpserver), flows={"shop": SHOP_FLOW, "gate": GATE_FLOW})


def run_shop(h: Hookline, skus: list[str], status: str = "paid") -> int:
    """Accept and execute to the end, waiting out retries as a worker would."""
    run_id = h.send({"id": f"o-{'-'.join(skus)}-{status}", "status": status,
                     "line_items": [{"sku": s} for s in skus]}, flow="shop")
    for _ in range(20):
        run = h.store.get_run_record(run_id)
        assert run is not None
        if run.status.terminal:
            break
        time.sleep(max(0.0, (run.next_attempt_at or time.time()) - time.time()) + 0.01)
        h.svc.execute_run(run_id)
    return run_id


def test_foreach_items_switch_case_and_folded_attempts(shop: Hookline) -> None:
    run_id = run_shop(shop, ["a", "flaky", "b"])
    data = shop.json(f"/runs/{run_id}.json")
    assert data["run"]["status"] == "succeeded"
    lines, route = data["tree"]["steps"]
    assert lines["kind"] == "foreach" and lines["status"] == "succeeded" and lines["all_succeeded"]
    assert [(i["key"], i["status"]) for i in lines["items"]] == [("a", "succeeded"), ("flaky", "succeeded"),
                                                                  ("b", "succeeded")]
    assert lines["item_counts"] == {"succeeded": 3} and lines["item_total"] == 3
    flaky = lines["items"][1]["steps"][0]
    assert flaky["path"] == "lines[flaky].decrement" and flaky["retries"] == 1
    assert [(a["attempt"], a["status"]) for a in flaky["attempts"]] == [(1, "failed"), (2, "succeeded")]
    assert flaky["attempts"][0]["response"]["status"] == 503 and flaky["final"]["attempt"] == 2
    assert flaky["origin"]["path"] == "/decrement" and flaky["origin"]["scheme"] == "http"
    assert route["kind"] == "switch" and route["case"] == "0" and route["case_when"] == 'event.status == "paid"'
    assert [s["path"] for s in route["cases"][0]["steps"]] == ["route.0.invoice"]
    assert data["tree"]["on_failure"] == []
    assert len(data["steps"]) == 7  # the flat records stay: 4 decrement attempts, lines, invoice, route

    soup = shop.html(f"/runs/{run_id}")
    items = soup.select('li.step[data-path="lines"] li.item')
    assert [i["data-key"] for i in items] == ["a", "flaky", "b"]
    assert all(not i.select_one("details").has_attr("open") for i in items), "all succeeded: collapsed"
    assert soup.select_one('li.step[data-path="lines"] > details').has_attr("open") is False
    assert len(soup.select('li.step[data-path="lines[flaky].decrement"] ol.attempts > li')) == 2
    assert soup.select('li.step[data-path="lines[flaky].decrement"]')[0].select_one(".attempts-tag").get_text() \
        == "2 attempts"
    assert "case 0" in soup.select_one('li.step[data-path="route"] .case').get_text()


def test_a_failed_item_opens_and_on_failure_steps_are_shown(shop: Hookline) -> None:
    run_id = run_shop(shop, ["a", "bad"])
    data = shop.json(f"/runs/{run_id}.json")
    assert data["run"]["status"] == "failed" and "lines[bad].decrement" in data["run"]["error"]
    (lines,) = data["tree"]["steps"]
    assert lines["status"] == "failed" and not lines["all_succeeded"]
    assert lines["item_counts"] == {"succeeded": 1, "failed": 1}
    assert [s["path"] for s in data["tree"]["on_failure"]] == ["on_failure.alert"]
    assert data["tree"]["on_failure"][0]["status"] == "succeeded"
    soup = shop.html(f"/runs/{run_id}")
    assert soup.select_one('li.item[data-key="bad"] > details').has_attr("open")
    assert not soup.select_one('li.item[data-key="a"] > details').has_attr("open")
    assert soup.select_one("#on-failure") is not None
    assert soup.select_one('ol.on-failure li.step[data-path="on_failure.alert"]') is not None


def test_the_default_case_and_its_failure(shop: Hookline) -> None:
    run_id = run_shop(shop, ["a"], status="weird")
    data = shop.json(f"/runs/{run_id}.json")
    route = data["tree"]["steps"][1]
    assert route["case"] == "default" and route["status"] == "failed"
    assert route["cases"][0]["steps"][0]["final"]["error"]["message"] == "unknown status weird"


def test_call_urls_show_their_host_and_mask_secrets(h: Hookline, httpserver: HTTPServer) -> None:
    run_id = h.send(order(1))
    data = h.json(f"/runs/{run_id}.json")
    crm = next(s for s in data["steps"] if s["step_id"] == "crm")
    assert crm["request"]["url"] == httpserver.url_for("/contacts") + "?api_key=${CRM_SECRET}"
    assert crm["request"]["headers"] and ["x-api-token", "${CRM_SECRET}"] in [[k.lower(), v] for k, v in
                                                                           crm["request"]["headers"]]
    node = next(n for n in data["tree"]["steps"] if n["path"] == "crm")
    assert node["origin"] == {"method": "POST", "scheme": "http", "host": "localhost", "port": httpserver.port,
                              "path": "/contacts", "origin": f"http://localhost:{httpserver.port}"}
    page = h.client.get(f"/runs/{run_id}").get_data(as_text=True)
    assert SECRET not in page and f"http://localhost:{httpserver.port}" in page


def test_paths_split_into_containers_items_and_cases() -> None:
    from web.run_view import split_path, step_tree

    assert split_path("lines[sku.4].route.0.x") == ["lines[sku.4]", "route", "0", "x"]
    views = [{"path": p, "status": "succeeded", "attempt": 1, "started_at": None, "request": None, "output": None,
              "input": None} for p in ("a[k.1].route.default.x", "a[k.1].route", "a", "on_failure.b")]
    tree = step_tree(views)
    (a,) = tree["steps"]
    assert a["items"][0]["key"] == "k.1" and a["items"][0]["steps"][0]["cases"][0]["label"] == "default"
    assert a["items"][0]["steps"][0]["cases"][0]["steps"][0]["path"] == "a[k.1].route.default.x"
    assert [n["path"] for n in tree["on_failure"]] == ["on_failure.b"]


# --- reasons, resolution, the unresolved view, the diagram -------------------------------------------


def test_the_reason_of_every_non_success_status(shop: Hookline) -> None:
    filtered = shop.send({"id": "g1", "status": "pending"}, flow="gate")
    weird = run_shop(shop, ["a"], status="weird")
    bad = run_shop(shop, ["a", "bad"])
    rows = {r["id"]: r for r in shop.json("/runs.json")["runs"]}
    assert rows[filtered]["status"] == "filtered"
    assert rows[filtered]["why"]["summary"] == "stopped by filter only_paid"
    assert rows[weird]["why"]["summary"] == "failed at route.default.unknown (case default of route): unknown status weird"
    assert rows[weird]["why"]["step"]["inside"] == [{"kind": "case", "step": "route", "case": "default"}]
    assert rows[bad]["why"]["summary"].startswith("failed at lines[bad].decrement (item bad of lines): ")
    assert "409" in rows[bad]["why"]["message"]
    assert rows[bad]["resolution"]["state"] == "unresolved"
    soup = shop.html("/runs")
    assert soup.select_one(f'tr[data-id="{filtered}"] .why').get_text() == "stopped by filter only_paid"
    assert "case default of route" in soup.select_one(f'tr[data-id="{weird}"] .why').get_text()
    detail = shop.html(f"/runs/{weird}")
    assert "case default of route" in detail.select_one(".alert.why").get_text()
    assert shop.html(f"/runs/{filtered}").select_one(".alert.filt").get_text(" ", strip=True) \
        == "Filtered: stopped by filter only_paid"


def test_a_failure_is_resolved_by_the_retry_that_succeeded(shop: Hookline) -> None:
    kept = run_shop(shop, ["a"], status="weird")  # fails at the switch on every try: stays unresolved
    failed = run_shop(shop, ["a", "bad"])  # "bad" is refused once only
    assert {f["id"]: f["unresolved"] for f in shop.json("/flows.json")["flows"]}["shop"] == 2
    assert [r["id"] for r in shop.json("/runs.json?status=unresolved")["runs"]] == [failed, kept]
    child = shop.svc.retry_from_failed(failed)
    shop.svc.execute_run(child)
    assert shop.store.get_run_record(child).status.value == "succeeded"  # type: ignore[union-attr]
    rows = {r["id"]: r for r in shop.json("/runs.json")["runs"]}
    assert rows[failed]["resolution"] == {"state": "resolved", "by": child, "kind": "retry",
                                          "url": f"/runs/{child}"}
    assert [r["id"] for r in shop.json("/runs.json?status=unresolved")["runs"]] == [kept]
    assert [r["id"] for r in shop.json("/runs.json?status=unresolved&flow=shop")["runs"]] == [kept]
    flows = {f["id"]: f for f in shop.json("/flows.json")["flows"]}
    assert flows["shop"]["unresolved"] == 1 and flows["gate"]["unresolved"] == 0
    assert flows["shop"]["unresolved_url"] == "/runs?flow=shop&status=unresolved"
    assert shop.json("/flows/shop.json")["flow"]["unresolved"] == 1
    soup = shop.html(f"/runs/{failed}")
    assert soup.select_one(".alert.why a.resolved")["href"] == f"/runs/{child}"
    assert soup.select_one(f'tr[data-id="{failed}"]') is None
    listing = shop.html("/runs?status=unresolved")
    assert listing.select_one("h1").get_text(" ", strip=True).startswith("Unresolved failures")
    assert [tr["data-id"] for tr in listing.select("table.runs tbody tr")] == [str(kept)]


def test_flow_diagram_with_counts_per_step(shop: Hookline) -> None:
    run_shop(shop, ["a", "b"])
    run_shop(shop, ["c", "bad"])
    run_shop(shop, ["d"], status="weird")
    data = shop.json("/flows/shop.json")["diagram"]
    nodes = {b["step_id"]: b for b in data["boxes"] if b["kind"] == "step"}
    assert set(nodes) == {"lines", "decrement", "route", "invoice", "unknown", "alert"}
    assert nodes["decrement"]["stats"]["succeeded"] == 4 and nodes["decrement"]["stats"]["failed"] == 1
    assert "409" in nodes["decrement"]["stats"]["error"] and nodes["decrement"]["stats"]["error_count"] == 1
    assert nodes["unknown"]["stats"] == {"succeeded": 0, "failed": 1, "error": "unknown status weird",
                                         "error_count": 1}
    assert nodes["alert"]["stats"]["succeeded"] == 2
    assert [b["label"] for b in data["boxes"] if b["kind"] == "case"] == ["case 0", "default"]
    assert {b["kind"] for b in data["boxes"]} == {"step", "foreach", "case", "handler"}
    frame = next(b for b in data["boxes"] if b["kind"] == "foreach")
    inner = nodes["decrement"]
    assert frame["x"] < inner["x"] and inner["x"] + inner["w"] < frame["x"] + frame["w"]
    assert nodes["alert"]["x"] > max(b["x"] + b["w"] for b in data["boxes"] if b["kind"] == "foreach")
    soup = shop.html("/flows/shop")
    svg = soup.select_one("svg.flow-diagram")
    assert svg is not None and not soup.select("svg.flow-diagram script")
    node = svg.select_one('g.node[data-step="decrement"]')
    assert "has-failed" in node["class"] and "✓ 4" in node.get_text() and "✗ 1" in node.get_text()
    assert "409" in node.select_one("title").get_text()
    assert len(svg.select("line.edge")) == 4  # lines -> decrement, lines -> route, route -> each case


def test_search_by_error_text_and_response_status(shop: Hookline) -> None:
    ok = run_shop(shop, ["a"])
    bad = run_shop(shop, ["b", "bad"])
    weird = run_shop(shop, ["c"], status="weird")

    def found(q: str, **extra: str) -> list[int]:
        return [r["id"] for r in shop.json("/runs.json", query_string={"q": q, **extra})["runs"]]

    assert found("error:CONFLICT") == [bad]
    assert found("code:409") == [bad] and found("code:500") == []
    assert found("error:unknown status") == [weird] and found("error:unknown status", status="succeeded") == []
    assert found("unknown status weird") == [weird]  # plain text: bodies, then why runs failed
    assert ok not in found("error:a")
