"""The operator's view in a real browser (issue 15): a foreach run's item rows and the chosen case, a
call's URL showing its host with the token masked, and (below) reasons, unresolved failures, bulk retry,
search and the flow diagram. Its own live server, so the failures made here do not change the counts
test_browser.py expects.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.harness import BROWSER, LINES_ID, Live, live_hookline, logged_in_page

pytestmark = BROWSER


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_hookline(tmp_path_factory.mktemp("operator")) as live:
        yield live


@pytest.fixture(scope="module")
def page(live: Live) -> Iterator[Page]:
    with logged_in_page(live.url) as page:
        yield page


def lines_order(live: Live, n: int, statuses: list[int], channel: str = "web") -> int:
    items = [{"sku": f"sku-{n}-{i}", "status": s} for i, s in enumerate(statuses)]
    run_id = live.send_unsigned(LINES_ID, {"id": f"ord-{n}", "channel": channel, "items": items})
    live.wait_done(run_id)
    return run_id


def test_foreach_items_as_rows_and_the_chosen_case(page: Page, live: Live) -> None:
    ok = lines_order(live, 1, [200, 200, 200])
    page.goto(f"{live.url}/runs/{ok}")
    lines = page.locator('li.step[data-path="lines"]')
    expect(lines.locator("> details > summary .item-counts")).to_contain_text("3 items · 3 succeeded")
    expect(lines.locator("li.item")).to_have_count(3)
    expect(lines.locator("li.item").first).to_be_hidden()  # collapsed: every item succeeded
    lines.locator("> details > summary").click()
    expect(lines.locator("li.item").first).to_be_visible()
    expect(lines.locator('li.item[data-key="sku-1-0"] > details > summary')).to_contain_text("succeeded")
    expect(page.locator('li.step[data-path="route"] .case')).to_contain_text('case 0: event.channel == "web"')

    failed = lines_order(live, 2, [200, 409, 200])
    page.goto(f"{live.url}/runs/{failed}")
    bad = page.locator('li.item[data-key="sku-2-1"]')
    expect(bad).to_be_visible()  # the failed item and its container are open
    expect(bad.locator("> details > summary")).to_contain_text("failed")
    expect(bad.locator(".error-msg").first).to_contain_text("409")
    expect(page.locator('li.item[data-key="sku-2-0"] .step-body').first).to_be_hidden()


def test_call_url_shows_its_host_with_the_token_masked(page: Page, live: Live) -> None:
    run_id = lines_order(live, 3, [200])
    page.goto(f"{live.url}/runs/{run_id}")
    host = live.url.removeprefix("http://")
    page.locator('li.step[data-path="lines"] > details > summary').click()
    item = page.locator('li.item[data-key="sku-3-0"]')
    expect(item.locator(".origin").first).to_contain_text(f"http://{host}")
    item.locator("> details > summary").click()
    step = item.locator('li.step[data-path="lines[sku-3-0].reserve"]')
    expect(step.locator("code.url")).to_contain_text(f"http://{host}/sandbox/crm/stock?sandbox_status=200")
    assert live.env["CRM_TOKEN"] not in page.content()


def test_filtered_reason_and_the_unresolved_failures_view(page: Page, live: Live) -> None:
    filtered = live.send(live.payment(31, event_type="charge.refunded"))
    assert live.wait_done(filtered) == "filtered"
    unknown = lines_order(live, 4, [200], channel="fax")
    page.goto(f"{live.url}/runs")
    expect(page.locator(f'tr[data-id="{filtered}"] .why')).to_have_text("stopped by filter succeeded_only")
    expect(page.locator(f'tr[data-id="{unknown}"] .why')).to_contain_text(
        "failed at route.default.unknown_channel (case default of route): unknown channel fax")
    page.click("nav >> text=Unresolved failures")
    expect(page.locator("h1")).to_contain_text("Unresolved failures")
    expect(page.locator(f'table.runs tr[data-id="{unknown}"]')).to_be_visible()
    expect(page.locator(f'table.runs tr[data-id="{filtered}"]')).to_have_count(0)
    page.goto(f"{live.url}/runs/{unknown}")
    expect(page.locator(".alert.why")).to_contain_text("unresolved")
    page.click("button:has-text('Replay on original version')")
    child = int(page.url.rsplit("/", 1)[-1])
    live.wait_done(child)
    page.goto(f"{live.url}/runs?status=unresolved")
    expect(page.locator(f'table.runs tr[data-id="{child}"]')).to_be_visible()  # the failure moved to the replay
    expect(page.locator(f'table.runs tr[data-id="{unknown}"]')).to_have_count(0)
    page.goto(f"{live.url}/flows")
    card = page.locator("section.card", has=page.locator(f'a[href="/flows/{LINES_ID}"]'))
    expected = live.svc.store.unresolved_counts([LINES_ID])[LINES_ID]  # the earlier tests' failures count too
    assert expected >= 1
    expect(card.locator("a.unresolved")).to_have_text(str(expected))


def test_flow_diagram_with_counts(page: Page, live: Live) -> None:
    lines_order(live, 5, [200, 200])
    lines_order(live, 6, [409])
    page.goto(f"{live.url}/flows/{LINES_ID}")
    svg = page.locator("svg.flow-diagram")
    expect(svg).to_be_visible()
    reserve = svg.locator('g.node[data-step="reserve"]')
    expect(reserve).to_have_class("node t-http has-failed")
    counts = reserve.locator("text.n-counts").text_content() or ""
    ok, bad = int(counts.split("✓")[1].split()[0]), int(counts.split("✗")[1].split()[0])
    assert ok >= 2 and bad >= 1
    expect(reserve.locator("text.n-error")).to_contain_text("409")
    expect(svg.locator("g.case")).to_have_count(2)
    expect(svg.locator('g.frame.f-foreach')).to_contain_text("for each item of lines")
    box = reserve.bounding_box()
    assert box is not None and box["width"] > 100


def test_search_by_error_text(page: Page, live: Live) -> None:
    refused = lines_order(live, 7, [200, 422])
    page.goto(f"{live.url}/runs")
    page.fill("input[name=q]", "code:422")
    page.click("form.filters button")
    expect(page.locator("table.runs tbody tr")).to_have_count(1)
    expect(page.locator(f'table.runs tr[data-id="{refused}"] .why')).to_contain_text("item sku-7-1 of lines")
    page.fill("input[name=q]", "error:UNPROCESSABLE")
    page.click("form.filters button")
    expect(page.locator(f'table.runs tr[data-id="{refused}"]')).to_be_visible()
