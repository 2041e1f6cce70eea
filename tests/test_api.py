"""The JSON API under /api: same data as the pages' twins, the operator actions, errors and OpenAPI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from tests.ui_helpers import ORDERS_FLOW, REJECTED_AMOUNT, Hookline, make_hookline, serve_target

TOKEN = "api-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def h(tmp_path: Path, httpserver: HTTPServer) -> Hookline:
    return make_hookline(tmp_path, serve_target(httpserver), api_token=TOKEN, admin_password="pw")


def order(n: int, amount: int = 5) -> dict[str, Any]:
    return {"id": f"evt_{n}", "order_id": f"o-{n}", "email": f"b{n}@example.com", "amount": amount}


def post(h: Hookline, path: str, body: Any = None, status: int = 201) -> Any:
    resp = h.client.post(path, json=body, headers=AUTH) if body is not None else h.client.post(path, headers=AUTH)
    assert resp.status_code == status, (path, resp.status_code, resp.get_data(as_text=True))
    return resp.get_json()


def test_runs_list_filters_and_paginates(h: Hookline) -> None:
    for n in range(1, 5):
        h.send(order(n, amount=REJECTED_AMOUNT if n == 3 else 5))
    page = h.json("/api/runs?limit=3", headers=AUTH)
    assert [r["id"] for r in page["runs"]] == [4, 3, 2] and page["next_cursor"] == 2
    assert [r["id"] for r in h.json("/api/runs?cursor=2", headers=AUTH)["runs"]] == [1]
    assert [r["id"] for r in h.json("/api/runs?status=failed&flow=orders", headers=AUTH)["runs"]] == [3]
    assert [r["id"] for r in h.json("/api/runs?after=2", headers=AUTH)["runs"]] == [4, 3]
    assert [r["id"] for r in h.json("/api/runs?ids=1,3,77", headers=AUTH)["runs"]] == [3, 1]
    run = page["runs"][0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", run["created_at"])
    assert run["url"] == "/runs/4" and run["status"] == "succeeded" and run["terminal"] is True
    assert h.json("/api/runs?since=1h&until=2999-01-01T00:00:00Z", headers=AUTH)["filter"]["until"] == \
        "2999-01-01T00:00:00.000Z"


@pytest.mark.parametrize("query,message", [
    ("since=soon", "since: expected ISO-8601"),
    ("until=2024-13-45", "until: expected ISO-8601"),
    ("since=-5", "since: epoch seconds must be a non-negative number"),
    ("cursor=abc", "cursor: expected a whole number"),
    ("limit=501", "limit: must be between 1 and 500"),
    ("status=sucess", "status: expected one of queued, running"),
    ("ids=1,x", "ids: expected comma-separated run ids"),
])
def test_bad_parameters_are_400_with_one_line(h: Hookline, query: str, message: str) -> None:
    data = h.json(f"/api/runs?{query}", 400, headers=AUTH)
    assert set(data) == {"ok", "error", "status"} and data["ok"] is False and data["status"] == 400
    assert data["error"].startswith(message) and "\n" not in data["error"]


def test_run_detail_and_404(h: Hookline) -> None:
    run_id = h.send(order(1))
    data = h.json(f"/api/runs/{run_id}", headers=AUTH)
    assert data["run"]["id"] == run_id and [s["step_id"] for s in data["steps"]] == ["payment", "crm", "invoice"]
    assert h.json("/api/runs/404", 404, headers=AUTH) == {"ok": False, "error": "no run with id 404", "status": 404}
    assert h.json("/api/nothing-here", 404, headers=AUTH)["ok"] is False


def test_replay_current_or_original(h: Hookline) -> None:
    run_id = h.send(order(1))
    created = post(h, f"/api/runs/{run_id}/replay")
    assert created["parent_run_id"] == run_id and created["url"] == f"/runs/{created['run_id']}"
    original = post(h, f"/api/runs/{run_id}/replay", {"version": "original"})
    assert original["run_id"] == created["run_id"] + 1
    assert post(h, f"/api/runs/{run_id}/replay", {"version": "latest"}, 400)["error"].startswith("version:")
    assert post(h, "/api/runs/999/replay", {}, 404)["error"] == "no run with id 999"
    h.execute_enqueued()
    replayed = h.json(f"/api/runs/{created['run_id']}", headers=AUTH)
    assert replayed["run"]["status"] == "succeeded" and replayed["parent"]["id"] == run_id

    (h.flows_dir / "orders.yaml").write_text(ORDERS_FLOW + "  - broken: {}\n")
    h.svc.catalog.refresh(force=True)
    refused = post(h, f"/api/runs/{run_id}/replay", {"version": "current"}, 409)
    assert "is not loaded" in refused["error"]
    post(h, f"/api/runs/{run_id}/replay", {"version": "original"}, 201)


def test_retry_only_failed_runs(h: Hookline) -> None:
    ok = h.send(order(1))
    failed = h.send(order(2, amount=REJECTED_AMOUNT))
    conflict = post(h, f"/api/runs/{ok}/retry", None, 409)
    assert conflict["error"] == f"run {ok} is succeeded; only failed runs can be retried from the failed step"
    created = post(h, f"/api/runs/{failed}/retry")
    h.execute_enqueued()
    child = h.json(f"/api/runs/{created['run_id']}", headers=AUTH)
    assert child["run"]["replay_kind"] == "retry" and child["run"]["status"] == "failed"


def test_bulk_replay_by_filter(h: Hookline) -> None:
    for n in range(1, 6):
        h.send(order(n, amount=REJECTED_AMOUNT if n in (2, 5) else 5))
    result = post(h, "/api/runs/replay", {"status": "failed", "since": "6h"})
    assert result["count"] == 2 and result["replayed"] == [2, 5] and result["run_ids"] == [6, 7]
    assert post(h, "/api/runs/replay", {}, 400)["error"].startswith("bulk replay needs a filter")
    assert post(h, "/api/runs/replay", {"since": "later"}, 400)["error"].startswith("since:")
    assert post(h, "/api/runs/replay", {"flow": "nope"})["count"] == 0
    resp = h.client.post("/api/runs/replay", data="[1]", content_type="application/json", headers=AUTH)
    assert resp.status_code == 400 and resp.get_json()["error"] == "body must be a JSON object"


def test_dry_run_sends_nothing(h: Hookline, httpserver: HTTPServer) -> None:
    run_id = h.send(order(1))
    before = len(httpserver.log)
    data = post(h, f"/api/runs/{run_id}/dry-run", None, 200)
    assert len(httpserver.log) == before
    assert data["status"] == "succeeded" and [s["step_id"] for s in data["steps"]] == ["payment", "crm", "invoice"]
    assert data["steps"][1]["request"]["method"] == "POST"


def test_flows_api(h: Hookline) -> None:
    flows = h.json("/api/flows", headers=AUTH)["flows"]
    assert [f["id"] for f in flows] == ["orders"]
    assert h.json("/api/flows/orders", headers=AUTH)["flow"]["steps"][0]["id"] == "payment"


# --- OpenAPI ----------------------------------------------------------------------------------------


def test_every_api_route_is_in_openapi(h: Hookline) -> None:
    spec = h.json("/api/openapi.json", headers=AUTH)
    assert re.fullmatch(r"3\.\d+\.\d+", spec["openapi"]) and spec["info"]["title"]
    routes = set()
    for rule in h.app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes.add((path, method.lower()))
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes == documented
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["responses"] and op["operationId"], (path, method)
            assert all(re.fullmatch(r"[1-5]\d\d", code) for code in op["responses"])
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == set(re.findall(r"{(\w+)}", path)), (path, method)
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', str(spec).replace("'", '"')))
    assert refs <= set(spec["components"]["schemas"])
