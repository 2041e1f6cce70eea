"""Silent misconfiguration made visible, in a real browser: a ``dedupe: $.idd`` typo and an index field
that never resolves are counted on the flow page with the first such run linked; a ``lower: true`` index
field is found from the runs page's search box whatever case is typed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.harness import BROWSER, Live, live_hookline, logged_in_page

pytestmark = BROWSER

FLOW_ID = "typo_shop"
FLOW = """\
id: typo_shop
trigger:
  dedupe: $.idd
  index:
    email: {path: $.customer.email, lower: true}
    order_id: $.order.number
steps:
  - id: note
    transform: {order: "{{ event.order.id }}"}
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("misconfig")
    (tmp / "flows").mkdir()
    (tmp / "flows" / f"{FLOW_ID}.yaml").write_text(FLOW)
    with live_hookline(tmp) as live:
        yield live


@pytest.fixture(scope="module")
def page(live: Live) -> Iterator[Page]:
    with logged_in_page(live.url) as page:
        yield page


@pytest.fixture(scope="module")
def runs(live: Live) -> list[int]:
    """Three orders: the provider sends ``id`` (the flow reads ``idd``) and ``order.id`` (not ``number``)."""
    ids = [live.send_unsigned(FLOW_ID, {"id": f"evt_{n}", "order": {"id": n},
                                        "customer": {"email": email}})
           for n, email in ((1, "Grace@Example.com"), (2, "ada@example.com"), (3, "grace@example.com "))]
    for run_id in ids:
        live.wait_done(run_id)
    return ids


def test_the_flow_page_counts_runs_without_a_dedupe_key_and_links_the_first(page: Page, live: Live,
                                                                            runs: list[int]) -> None:
    page.goto(f"{live.url}/flows/{FLOW_ID}")
    dedupe = page.locator('#empty-keys li[data-key="dedupe"]')
    expect(dedupe).to_contain_text("3 runs had no dedupe key")
    expect(dedupe).to_contain_text("dedupe: $.idd")
    expect(page.locator('#empty-keys li[data-key="index.order_id"]')).to_contain_text("3 runs had no index value")
    expect(page.locator('#empty-keys li[data-key="index.email"]')).to_have_count(0)  # every run had one
    dedupe.locator("a").click()
    expect(page).to_have_url(f"{live.url}/runs/{runs[0]}")

    data = page.request.get(f"{live.url}/flows/{FLOW_ID}.json").json()
    by_key = {k["key"]: k for k in data["empty_keys"]}
    assert by_key["dedupe"]["count"] == 3 and by_key["dedupe"]["first_run_id"] == runs[0]
    assert by_key["index.email"]["count"] == 0 and by_key["index.email"]["first_run_id"] is None


def test_the_search_box_finds_a_lower_field_in_any_case(page: Page, live: Live, runs: list[int]) -> None:
    page.goto(f"{live.url}/runs")
    page.fill("input[name=q]", "email:grace@example.com")
    page.click("form.filters button")
    expect(page.locator("table.runs tbody tr")).to_have_count(2)
    expect(page.locator(f'table.runs tr[data-id="{runs[0]}"]')).to_be_visible()  # sent as Grace@Example.com
    expect(page.locator(f'table.runs tr[data-id="{runs[2]}"]')).to_be_visible()
    page.fill("input[name=q]", "email:ADA@EXAMPLE.COM")
    page.click("form.filters button")
    expect(page.locator("table.runs tbody tr")).to_have_count(1)
    expect(page.locator(f'table.runs tr[data-id="{runs[1]}"]')).to_be_visible()
