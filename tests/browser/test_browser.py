"""The operator's path in a real browser: headless Chromium (Debian's) driven by Playwright against a live
server: log in, watch a signed webhook's run appear without reloading, read a step, replay it,
bulk-replay failed runs, and check that a hostile payload stays text.

HOOKLINE_SCREENSHOTS=1 also refreshes docs/img/runs.png, docs/img/run-detail.png and docs/img/flow.png.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

from tests.browser import screenshots
from tests.browser.harness import BROWSER, CHROMIUM_ARGS, PASSWORD, Live, live_hookline

pytestmark = BROWSER
XSS = "<script>alert(1)</script>"
JS_URL = "javascript:alert(document.domain)"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_hookline(tmp_path_factory.mktemp("live")) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                    args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def dialogs() -> list[str]:
    return []


@pytest.fixture(scope="module")
def page(browser: Browser, live: Live, dialogs: list[str]) -> Iterator[Page]:
    """One logged-in tab for the whole module; any dialog or JavaScript error fails the tests."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    screenshots.log_in(page, live.url)
    yield page
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"


def test_login_is_required_and_checks_the_password(browser: Browser, live: Live) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{live.url}/runs?status=failed")
    expect(page).to_have_url(f"{live.url}/login?next=/runs?status%3Dfailed")
    page.fill("input[name=password]", "wrong")
    page.click("form.login button")
    expect(page.locator(".login .alert")).to_have_text("Wrong password.")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button")
    expect(page).to_have_url(f"{live.url}/runs?status=failed")
    context.close()


def test_live_refresh_detail_and_replay(page: Page, live: Live) -> None:
    page.goto(f"{live.url}/runs")
    expect(page.locator("#live")).to_be_visible()

    page.evaluate("window.__sameDocument = true")
    run_id = live.send(live.payment(1, email="Ada@Lovelace.dev"))
    row = page.locator(f'table.runs tr[data-id="{run_id}"]')
    expect(row).to_be_visible()
    expect(row.locator(".status")).to_have_text("succeeded")  # status refreshed in place
    assert page.evaluate("window.__sameDocument") is True, "the row arrived without a reload"

    row.locator("a").first.click()
    expect(page.locator("h1")).to_contain_text(f"Run #{run_id}")
    payment = page.locator("li.step", has=page.locator(".step-id", has_text="payment"))
    payment.locator("summary").first.click()
    output = payment.locator("details.block", has_text="Output").locator("pre")
    expect(output).to_contain_text('"email": "ada@lovelace.dev"')
    expect(output.locator("span.j-key").first).to_be_visible()  # highlighted

    page.click("button:has-text('Replay')")
    expect(page.locator(".banner.ok")).to_contain_text(f"Run {run_id} replayed as run")
    new_id = int(re.search(r"as run (\d+)", page.locator(".banner.ok").inner_text()).group(1))  # type: ignore[union-attr]
    assert live.wait_done(new_id) == "succeeded"
    page.reload()
    expect(page.locator("h1 .status")).to_have_text("succeeded")
    expect(page.locator("dl.facts")).to_contain_text(f"run #{run_id}")


def test_bulk_replay_of_failed_runs(page: Page, live: Live) -> None:
    failed = [live.send(live.payment(n, currency="jpy")) for n in (11, 12)]
    assert [live.wait_done(r) for r in failed] == ["failed", "failed"]
    page.goto(f"{live.url}/runs?status=failed&since=6h")
    expect(page.locator("table.runs tbody tr")).to_have_count(2)
    page.click("text=Replay all matching runs")
    expect(page.locator("h1")).to_have_text("Replay 2 runs?")
    page.click("#confirm-bulk")
    expect(page).to_have_url(re.compile(r"/runs"))
    expect(page.locator(".banner.ok")).to_contain_text("Replayed 2 run(s)")
    # the kind tag in the id cell (a replayed run's row links its replay from the error cell too)
    replays = page.locator("table.runs tr", has=page.locator("td:first-child .tag", has_text="replay"))
    expect(replays).to_have_count(3)  # the two bulk replays and the earlier single one


def test_hostile_payload_stays_text(page: Page, live: Live, dialogs: list[str]) -> None:
    page.goto(f"{live.url}/runs")
    expect(page.locator("#live")).to_be_visible()
    run_id = live.send(live.payment(66, email=f"x{XSS}@evil.test", event_id=f"evt_{XSS}"))
    row = page.locator(f'table.runs tr[data-id="{run_id}"]')
    expect(row.locator("td.key")).to_have_text(f"evt_{XSS}")  # arrived by live refresh, shown literally
    event = live.payment(67, email=JS_URL)
    event["data"]["object"]["description"] = f'"><img src=x onerror=alert(2)>{XSS}'
    second = live.send(event)
    live.wait_done(second)
    page.goto(f"{live.url}/runs/{run_id}")
    expect(page.locator(".http pre").last).to_contain_text(f'"id": "evt_{XSS}"')
    page.goto(f"{live.url}/runs/{second}")
    body = page.locator("pre", has_text="onerror").first
    expect(body).to_contain_text('<img src=x onerror=alert(2)>')
    assert page.locator("img").count() == 0 and page.locator("a[href^='javascript']").count() == 0
    page.wait_for_timeout(300)
    assert dialogs == []


@pytest.mark.skipif(not os.environ.get("HOOKLINE_SCREENSHOTS"), reason="set HOOKLINE_SCREENSHOTS=1 to refresh docs/img")
def test_screenshots(browser: Browser, tmp_path: Path) -> None:
    shots = screenshots.take(browser, tmp_path)
    assert [p.name for p in shots] == ["runs.png", "run-detail.png", "flow.png"] and all(p.stat().st_size > 10_000 for p in shots)
