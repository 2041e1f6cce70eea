"""Bulk retry from the failed step on the current flow version, with its progress, in a real browser (issue 15).

Runs fail against a real 127.0.0.1 shipping API that answers 503 (its circuit opens, as it should); the
flow is fixed (a new version of its file, pointing at the API's new address) and the failed runs are
retried by filter on the current version. The
confirm page shows the count and the two versions side by side; the job page shows the progress, survives
a reload, and reaches the end; every retry keeps the succeeded CRM call and succeeds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from pytest_httpserver import HTTPServer

from engine import bulk
from tests.browser.harness import BROWSER, Live, live_hookline, logged_in_page

pytestmark = BROWSER

FLOW_ID = "shipments"
FLOW = """\
id: shipments
steps:
  - id: crm
    http: {url: "${CRM_URL}/shipments", json: {order: "{{ event.id }}"}}
  - id: ship
    http:
      url: ${SHIPPING_URL}/v1/ship
      json: {order: "{{ event.id }}"}
      retry: {max_attempts: 1}
"""
RUNS = 5


@pytest.fixture(scope="module")
def shipping() -> Iterator[tuple[HTTPServer, HTTPServer]]:
    """The old address answers 503 to everything; the new one (the fix points the flow there) takes shipments."""
    old, new = HTTPServer(), HTTPServer()
    old.expect_request("/v1/ship", method="POST").respond_with_json({"error": "unavailable"}, status=503)
    new.expect_request("/v2/ship", method="POST").respond_with_json({"shipment": "sh_1"}, status=201)
    old.start()
    new.start()
    yield old, new
    for server in (old, new):
        server.clear()
        server.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, shipping: tuple[HTTPServer, HTTPServer]) -> Iterator[Live]:
    with live_hookline(tmp_path_factory.mktemp("bulk")) as live:
        live.env["SHIPPING_URL"] = shipping[0].url_for("").rstrip("/")
        live.env["SHIPPING_V2_URL"] = shipping[1].url_for("").rstrip("/")
        write_flow(live, FLOW)
        yield live


@pytest.fixture(scope="module")
def page(live: Live) -> Iterator[Page]:
    with logged_in_page(live.url, timeout_ms=15_000) as page:
        yield page


def write_flow(live: Live, text: str) -> None:
    """A new version of the flow file, loaded now (the catalog would also see it within a second)."""
    (Path(live.svc.catalog.directory) / f"{FLOW_ID}.yaml").write_text(text)
    live.svc.catalog.refresh(force=True)


def crm_calls(live: Live) -> int:
    return len([r for r in live.svc.store.sandbox_list("crm", limit=100) if "shipments" in r["path"]])


def test_bulk_retry_on_the_current_version_with_progress(page: Page, live: Live,
                                                         shipping: tuple[HTTPServer, HTTPServer]) -> None:
    failed = [live.send_unsigned(FLOW_ID, {"id": f"ord-{n}"}) for n in range(RUNS)]
    assert [live.wait_done(r) for r in failed] == ["failed"] * RUNS
    assert crm_calls(live) == RUNS
    write_flow(live, FLOW.replace("${SHIPPING_URL}/v1/ship", "${SHIPPING_V2_URL}/v2/ship"))  # the fix

    page.goto(f"{live.url}/runs?flow={FLOW_ID}")
    page.click("#bulk-retry")
    expect(page.locator("h1")).to_have_text(f"Retry {RUNS} runs from the failed step?")
    group = page.locator(".version-group")
    expect(group).to_contain_text(f"{RUNS} runs of {FLOW_ID}")
    group.locator("details.versions > summary").wait_for()
    expect(group.locator("tr.d-changed td.old")).to_contain_text("${SHIPPING_URL}/v1/ship")
    expect(group.locator("tr.d-changed td.new")).to_contain_text("${SHIPPING_V2_URL}/v2/ship")

    live.svc.bulk_chunk = 2  # three chunks: the job page shows the progress
    gate, entered = threading.Event(), threading.Event()
    advance = bulk.advance

    def held(svc: Any, job_id: int, size: int | None = None) -> Any:
        job = advance(svc, job_id, size)
        entered.set()
        gate.wait(60)  # the first chunk is done; the rest waits until the page has shown it
        return job

    bulk.advance = held  # type: ignore[assignment]
    try:
        page.click("#confirm-bulk")
        expect(page).to_have_url(f"{live.url}/runs/jobs/1")
        assert entered.wait(30)
        expect(page.locator("#job-count")).to_contain_text(f"2 of {RUNS} runs retried from the failed step on "
                                                           "the current flow version")
        expect(page.locator("#job-state")).to_have_text("running")
        page.reload()  # the progress is in the database, not in the page
        expect(page.locator("progress#job-progress")).to_have_attribute("value", "2")
        gate.set()
        expect(page.locator("#job-state")).to_have_text("done", timeout=30_000)  # polled, then reloaded
    finally:
        gate.set()
        bulk.advance = advance  # type: ignore[assignment]
        live.svc.bulk_chunk = 100
    expect(page.locator("#job-count")).to_contain_text(f"{RUNS} of {RUNS} runs")
    links = page.locator("p.job-runs a")
    expect(links).to_have_count(RUNS)
    new_ids = [int((links.nth(i).inner_text()).lstrip("#")) for i in range(RUNS)]
    assert [live.wait_done(r) for r in new_ids] == ["succeeded"] * RUNS
    assert crm_calls(live) == RUNS, "the CRM call each run made was kept, not sent again"
    assert len([r for r, _ in shipping[1].log if r.path == "/v2/ship"]) == RUNS

    links.first.click()
    expect(page.locator("h1 .status")).to_have_text("succeeded")
    expect(page.locator("li.step").first).to_contain_text("crm")
    # every failure is resolved now: a second bulk retry finds nothing to do and says why
    page.goto(f"{live.url}/runs/retry?flow={FLOW_ID}")
    expect(page.locator("h1")).to_have_text("Retry 0 runs from the failed step?")
    expect(page.locator("ul.skipped")).to_contain_text(f"{RUNS} already replayed or retried")
