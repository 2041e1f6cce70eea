"""Retry from the failed step on the original or the current flow version, single and by filter, with the
two versions side by side, and bulk work as jobs whose progress is in the database (issue 15).

A real Hookline (tests/ui_helpers.py): SQLite in tmp_path, the orders flow calling a real 127.0.0.1
server that answers 422 to invoices of 13, the Flask test client for the pages, their JSON twins and the API.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from engine import bulk
from tests.support import wait_for
from tests.ui_helpers import ORDERS_FLOW, REJECTED_AMOUNT, Hookline, make_hookline, serve_target, visible_text
from web import bulk_view

TOKEN = "bulk-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INVOICE_AMOUNT = 'amount: "{{ steps.payment.amount }}"'
FIXED_INVOICE = 'amount: "{{ steps.payment.amount + 1 }}"'  # 13 becomes 14: the ledger takes it


@pytest.fixture
def h(tmp_path: Path, httpserver: HTTPServer) -> Hookline:
    return make_hookline(tmp_path, serve_target(httpserver), api_token=TOKEN, admin_password="pw")


def order(n: int, amount: int = 5) -> dict[str, Any]:
    return {"id": f"evt_{n}", "order_id": f"o{n}", "email": f"C{n}@Example.com", "amount": amount}


def new_version(h: Hookline, old: str, new: str) -> None:
    text = (h.flows_dir / "orders.yaml").read_text()
    assert old in text
    (h.flows_dir / "orders.yaml").write_text(text.replace(old, new))
    h.svc.catalog.refresh(force=True)


def calls(httpserver: HTTPServer, path: str) -> int:
    return len([r for r, _ in httpserver.log if r.path == path])


def api(h: Hookline, method: str, path: str, body: Any = None, status: int = 201) -> Any:
    resp = h.client.open(path, method=method, json=body, headers=AUTH)
    assert resp.status_code == status, (path, resp.status_code, resp.get_data(as_text=True)[:500])
    return resp.get_json()


def log_in(h: Hookline) -> str:
    resp = h.client.post("/login", data={"password": "pw", "csrf_token": _login_csrf(h)})
    assert resp.status_code == 302
    return h.csrf()


def _login_csrf(h: Hookline) -> str:
    soup = h.html("/login")
    return str(soup.find("meta", attrs={"name": "csrf-token"})["content"])


# --- single retry: the version choice ---------------------------------------------------------------


def test_retry_on_the_current_version_after_fixing_the_failed_step(h: Hookline, httpserver: HTTPServer) -> None:
    failed = h.send(order(1, amount=REJECTED_AMOUNT))
    # the API without a version keeps the old behaviour: the run's own version, which fails again
    child = api(h, "POST", f"/api/runs/{failed}/retry")["run_id"]
    h.execute_enqueued()
    assert api(h, "GET", f"/api/runs/{child}", status=200)["run"]["status"] == "failed"

    new_version(h, INVOICE_AMOUNT, FIXED_INVOICE)
    detail = api(h, "GET", f"/api/runs/{child}", status=200)
    versions = detail["versions"]
    assert versions["changed"] is True and versions["original"] == detail["run"]["flow_version"]
    changed = [r for r in versions["diff"] if r["tag"] == "changed"]
    assert [(r["old"][1].strip(), r["new"][1].strip()) for r in changed] == [(INVOICE_AMOUNT, FIXED_INVOICE)]

    contacts = calls(httpserver, "/contacts")
    fixed = api(h, "POST", f"/api/runs/{child}/retry", {"version": "current"})["run_id"]
    h.execute_enqueued()
    run = api(h, "GET", f"/api/runs/{fixed}", status=200)
    assert run["run"]["status"] == "succeeded" and run["run"]["flow_version"] == versions["current"]
    assert [s["step_id"] for s in run["steps"] if s["kept_from_parent"]] == ["payment", "crm"]
    assert calls(httpserver, "/contacts") == contacts, "the succeeded call was kept, not sent again"
    assert run["steps"][-1]["request"]["body_json"]["amount"] == REJECTED_AMOUNT + 1
    assert api(h, "POST", f"/api/runs/{failed}/retry", {"version": "newest"}, 400)["error"].startswith("version:")


def test_a_changed_call_that_succeeded_refuses_the_retry_on_the_current_version(
        h: Hookline, httpserver: HTTPServer) -> None:
    failed = h.send(order(1, amount=REJECTED_AMOUNT))
    new_version(h, "email: \"{{ steps.payment.email }}\"", "email: \"{{ steps.payment.email }}\"\n        source: shop")
    error = api(h, "POST", f"/api/runs/{failed}/retry", {"version": "current"}, 409)["error"]
    assert error == (f"run {failed} cannot be retried on the current flow version: step crm already succeeded and "
                     "changed in the current version; retry on its original version, or replay it to run every step "
                     "again")
    assert api(h, "GET", f"/api/runs/{failed}", status=200)["children"] == []  # nothing was created
    # the page says it in one line too, and the original version still retries
    csrf = log_in(h)
    resp = h.client.post(f"/runs/{failed}/retry", data={"csrf_token": csrf, "version": "current"})
    assert resp.status_code == 409 and "step crm already succeeded and changed" in resp.get_data(as_text=True)
    assert "Traceback" not in resp.get_data(as_text=True)
    resp = h.client.post(f"/runs/{failed}/retry", data={"csrf_token": csrf, "version": "original"})
    assert resp.status_code == 302


def test_a_changed_pure_step_is_computed_again_and_a_removed_call_dropped(h: Hookline, httpserver: HTTPServer) -> None:
    failed = h.send(order(1, amount=REJECTED_AMOUNT))
    # the transform now adds one to the amount, and crm is gone: nothing that was sent has to be sent again
    text = ORDERS_FLOW.replace('amount: "{{ event.amount }}"', 'amount: "{{ event.amount + 1 }}"')
    start, end = text.index("  - id: crm"), text.index("  - id: invoice")
    text = text[:start] + text[end:].replace('contact_id: "{{ steps.crm.response.json.id }}"', "contact_id: c_1")
    (h.flows_dir / "orders.yaml").write_text(text)
    h.svc.catalog.refresh(force=True)
    child = api(h, "POST", f"/api/runs/{failed}/retry", {"version": "current"})["run_id"]
    h.execute_enqueued()
    run = api(h, "GET", f"/api/runs/{child}", status=200)
    assert run["run"]["status"] == "succeeded"
    steps = {s["step_id"]: s for s in run["steps"]}
    assert set(steps) == {"payment", "invoice"} and not steps["payment"]["kept_from_parent"]
    assert steps["payment"]["output"]["amount"] == REJECTED_AMOUNT + 1


def test_the_run_page_shows_both_versions_side_by_side(h: Hookline) -> None:
    failed = h.send(order(1, amount=REJECTED_AMOUNT))
    log_in(h)
    soup = h.html(f"/runs/{failed}")
    assert soup.select_one("details.versions") is None  # the run ran the current version
    assert soup.select_one("form.retry input[name=version]")["value"] == "current"
    new_version(h, INVOICE_AMOUNT, FIXED_INVOICE + "  # <b>fixed</b>")
    soup = h.html(f"/runs/{failed}")
    table = soup.select_one("details.versions table.diff")
    changed = table.select("tr.d-changed")
    assert len(changed) == 1
    assert changed[0].select_one("td.old code").get_text().strip() == INVOICE_AMOUNT
    assert changed[0].select_one("td.new code").get_text().strip().endswith("# <b>fixed</b>")  # text, not markup
    assert table.find("b") is None
    assert [o["value"] for o in soup.select("form.retry select[name=version] option")] == ["current", "original"]
    assert table.select_one("tr.fold") is not None and "unchanged lines" in visible_text(table)


# --- bulk retry by filter -------------------------------------------------------------------------


def test_bulk_retry_confirms_the_count_and_the_skipped_then_retries(h: Hookline, httpserver: HTTPServer) -> None:
    ids = [h.send(order(n, amount=REJECTED_AMOUNT if n != 2 else 5)) for n in range(1, 6)]  # 2 succeeds
    api(h, "POST", f"/api/runs/{ids[0]}/retry")  # run 1 is followed up already (its retry fails: run 6)
    h.execute_enqueued()
    new_version(h, INVOICE_AMOUNT, FIXED_INVOICE)
    csrf = log_in(h)
    confirm = h.json("/runs/retry.json?flow=orders&since=6h")
    assert confirm["version"] == "current" and confirm["matched"] == 6
    assert confirm["first_ids"] == [3, 4, 5, 6] and confirm["count"] == 4
    assert [(s["reason"].split(" (")[0], s["count"], s["first_ids"]) for s in confirm["skipped"]] == [
        ("not failed", 1, [2]), ("already replayed or retried", 1, [1])]
    (group,) = confirm["versions"]
    assert group["count"] == 4 and group["changed"] is True
    assert any(r["tag"] == "changed" for r in group["diff"])
    soup = h.html("/runs/retry?flow=orders&since=6h")
    assert soup.h1.get_text(strip=True) == "Retry 4 runs from the failed step?"
    assert "1 not failed" in visible_text(soup.select_one("ul.skipped"))
    assert soup.select_one(".version-group table.diff tr.d-changed") is not None
    fields = {i["name"]: i.get("value") for i in soup.select("form.confirm input[type=hidden]")}
    assert fields["version"] == "current" and fields["max_id"] == "6"

    h.send(order(9, amount=REJECTED_AMOUNT))  # arrives after the confirmation: not included
    contacts = calls(httpserver, "/contacts")
    resp = h.client.post("/runs/retry", data=fields | {"csrf_token": csrf})
    assert resp.status_code == 302 and resp.headers["Location"] == "/runs?flow=orders"
    h.execute_enqueued()
    retries = [r for r in h.json("/runs.json?flow=orders")["runs"] if r["id"] > 7]
    assert sorted(r["parent_run_id"] for r in retries) == [3, 4, 5, 6]
    assert {r["status"] for r in retries} == {"succeeded"} and calls(httpserver, "/contacts") == contacts
    banner = h.html("/runs").select_one(".banner.ok").get_text()
    assert "Retried 4 run(s) from the failed step on the current flow version" in banner and "2 of the" in banner


def test_bulk_retry_skips_runs_whose_kept_call_changed(h: Hookline) -> None:
    early = h.send(order(1, amount=REJECTED_AMOUNT))
    new_version(h, "X-Api-Token: ${CRM_SECRET}", "X-Api-Token: ${CRM_SECRET}\n        X-Source: shop")
    later = h.send(order(2, amount=REJECTED_AMOUNT))  # on the new version already: nothing changed for it
    new_version(h, INVOICE_AMOUNT, FIXED_INVOICE)
    result = api(h, "POST", "/api/runs/retry", {"flow": "orders", "version": "current"})
    assert result["retried"] == [later] and result["count"] == 1
    assert [(s["count"], s["first_ids"]) for s in result["skipped"]] == [(1, [early])]
    assert result["skipped"][0]["reason"].startswith("a call they kept changed or moved")
    assert result["job"]["state"] == "done" and result["job"]["run_ids"] == result["run_ids"]
    original = api(h, "POST", "/api/runs/retry", {"flow": "orders", "version": "original", "q": str(early)})
    assert original["retried"] == [early] and original["skipped"] == []
    assert api(h, "POST", "/api/runs/retry", {}, 400)["error"].startswith("bulk retry needs a filter")


def test_the_same_bulk_retry_confirmed_twice_retries_each_run_once(h: Hookline, httpserver: HTTPServer) -> None:
    """A double click on the confirm button (or two operators): the second submit finds the runs retried."""
    for n in range(1, 4):
        h.send(order(n, amount=REJECTED_AMOUNT))
    csrf = log_in(h)
    fields = {i["name"]: i.get("value") for i in h.html("/runs/retry?flow=orders").select("form.confirm input[type=hidden]")}
    plans = [bulk.plan_retry(h.svc, [1, 2, 3], original_version=True) for _ in range(2)]  # both planned first
    jobs = [bulk.start(h.svc, plan, {"flow": "orders"}) for plan in plans]
    first, second = (bulk.run(h.svc, job_id) for job_id in jobs)
    assert len(first.run_ids) == 3 and second.run_ids == [] and second.skipped == {bulk.FOLLOWED: 3}
    assert "Retried 0 run(s)" in bulk_view.summary(second) and "3 of the filter's runs were skipped" in \
        bulk_view.summary(second)
    assert h.client.post("/runs/retry", data=fields | {"csrf_token": csrf}).status_code == 302
    assert sorted(r.parent_run_id or 0 for r in h.svc.store.runs_by_ids(range(4, 20))) == [1, 2, 3]


# --- progress -------------------------------------------------------------------------------------


def test_a_bulk_job_shows_progress_and_another_process_carries_it_on(h: Hookline,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(1, 8):
        h.send(order(n, amount=REJECTED_AMOUNT))
    csrf = log_in(h)
    h.svc.bulk_chunk = 2
    gate, entered = threading.Event(), threading.Event()
    advance = bulk.advance

    def held(svc: Any, job_id: int, size: int | None = None) -> Any:
        job = advance(svc, job_id, size)
        if threading.current_thread().name.startswith("hookline-bulk-"):  # the background carrying it on
            entered.set()
            assert gate.wait(30)
        return job

    monkeypatch.setattr(bulk, "advance", held)
    try:
        confirm = h.json("/runs/replay.json?flow=orders")
        resp = h.client.post("/runs/replay", data=confirm["fields"] | {"csrf_token": csrf, "max_id": confirm["max_id"],
                                                                         "version": "current"})
        assert resp.status_code == 302 and resp.headers["Location"] == "/runs/jobs/1"
        assert entered.wait(30)
        job = h.json("/runs/jobs/1.json")["job"]
        assert (job["state"], job["done"], job["total"], job["kind"]) == ("running", 2, 7, "replay")
        soup = h.html("/runs/jobs/1")
        assert soup.select_one("[data-job-poll]")["data-job-poll"] == "/runs/jobs/1.json"
        assert soup.select_one("progress")["value"] == "2" and soup.select_one("progress")["max"] == "7"
        # a second web process (here: this thread) carrying the same job on shares the chunks
        assert bulk.advance(h.svc, 1).done == 4
    finally:
        gate.set()
    job = wait_for(lambda: (j := h.json("/runs/jobs/1.json")["job"])["finished"] and j, what="the job to finish")
    assert job["state"] == "done" and job["done"] == 7 and len(set(job["run_ids"])) == 7
    assert sorted(r.parent_run_id for r in h.svc.store.runs_by_ids(job["run_ids"])) == list(range(1, 8))
    assert api(h, "GET", "/api/jobs/1", status=200)["job"]["run_ids"] == job["run_ids"]
    soup = h.html("/runs/jobs/1")
    assert soup.select_one("[data-job-poll]") is None and len(soup.select("p.job-runs a")) == 7
    assert api(h, "GET", "/api/jobs/99", status=404)["error"] == "no bulk job with id 99"


def test_a_stalled_job_is_offered_to_carry_on(h: Hookline) -> None:
    ids = [h.send(order(n, amount=REJECTED_AMOUNT)) for n in range(1, 4)]
    csrf = log_in(h)
    plan = bulk.plan_retry(h.svc, ids, original_version=True)
    job_id = bulk.start(h.svc, plan, {"flow": "orders"})
    job = h.svc.store.get_job(job_id)
    assert job is not None
    h.svc.store.advance_job(job, 1, now=time.time() - 3600)  # an hour ago; then its process died
    soup = h.html(f"/runs/jobs/{job_id}")
    form = soup.select_one(f'form[action="/runs/jobs/{job_id}/continue"]')
    assert form is not None and soup.select_one("[data-job-poll]") is None
    assert h.client.post(f"/runs/jobs/{job_id}/continue", data={"csrf_token": csrf}).status_code == 302
    job = wait_for(lambda: (j := h.svc.store.get_job(job_id)) and j.finished and j, what="the job to finish")
    assert job.done == 3 and len(set(job.run_ids)) == 3 and job.error is None



def test_a_worker_reaper_finishes_a_job_whose_web_process_died(h: Hookline) -> None:
    ids = [h.send(order(n, amount=REJECTED_AMOUNT)) for n in range(1, 4)]
    job_id = bulk.start(h.svc, bulk.plan_retry(h.svc, ids, original_version=True), {"flow": "orders"})
    job = h.svc.store.get_job(job_id)
    assert job is not None
    h.svc.store.advance_job(job, 1, now=time.time() - 3600)  # one chunk an hour ago; then its process died
    h.svc.reap(now=time.time() - 3600 + 5)  # still fresh then: not the reaper's
    assert (j := h.svc.store.get_job(job_id)) is not None and j.done == 1
    h.svc.reap()
    job = h.svc.store.get_job(job_id)
    assert job is not None and job.finished and job.done == 3 and len(set(job.run_ids)) == 3

SKIPPING_FLOW = """\
id: vip
steps:
  - id: welcome
    when: event.vip
    http: {url: "${TARGET_URL}/contacts", json: {email: "{{ event.email }}"}, retry: {max_attempts: 1}}
  - id: invoice
    http: {url: "${TARGET_URL}/invoices", json: {amount: "{{ event.amount }}"}, retry: {max_attempts: 1}}
"""


def test_a_skipped_call_whose_condition_changed_is_decided_again(tmp_path: Path, httpserver: HTTPServer) -> None:
    h = make_hookline(tmp_path, serve_target(httpserver), flows={"vip": SKIPPING_FLOW}, api_token=TOKEN,
                      admin_password="pw")
    failed = h.send({"email": "a@b.c", "vip": False, "amount": REJECTED_AMOUNT}, flow="vip")
    assert [s["status"] for s in api(h, "GET", f"/api/runs/{failed}", status=200)["steps"]] == ["skipped", "failed"]
    (h.flows_dir / "vip.yaml").write_text(SKIPPING_FLOW.replace("when: event.vip", "when: not event.vip")
                                          .replace('"{{ event.amount }}"', '"{{ event.amount + 1 }}"'))
    h.svc.catalog.refresh(force=True)
    contacts = calls(httpserver, "/contacts")
    child = api(h, "POST", f"/api/runs/{failed}/retry", {"version": "current"})["run_id"]  # nothing was sent
    h.execute_enqueued()
    run = api(h, "GET", f"/api/runs/{child}", status=200)
    assert run["run"]["status"] == "succeeded"
    assert [(s["step_id"], s["status"], s["kept_from_parent"]) for s in run["steps"]] == [
        ("welcome", "succeeded", False), ("invoice", "succeeded", False)]
    assert calls(httpserver, "/contacts") == contacts + 1


def test_a_database_outage_pauses_a_background_job_in_one_log_line(h: Hookline, monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from engine.errors import StoreUnavailable
    from web import ui

    def down(_svc: Any, _job_id: int) -> Any:
        raise StoreUnavailable("database unavailable: connection refused")

    monkeypatch.setattr(bulk, "run", down)
    with caplog.at_level("WARNING", logger="hookline.web"):
        ui._carry_on(h.svc, 7)
        wait_for(lambda: caplog.records, what="the background job's log line")
    (record,) = caplog.records
    assert record.exc_info is None and "\n" not in record.getMessage()
    assert record.getMessage().startswith("bulk job 7 paused: database unavailable")
