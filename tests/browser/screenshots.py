"""Screenshots for the README: the runs list, a failed run and a flow's page (docs/img/runs.png, run-detail.png, flow.png).

    .venv/bin/python -m tests.browser.screenshots          # or HOOKLINE_SCREENSHOTS=1 make test

Starts a live Hookline (tests/browser/harness.py), sends a realistic mix of Stripe webhooks (succeeded,
failed in accounting, filtered, a retry), then photographs the pages with headless Chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

from tests.browser.harness import CHROMIUM_ARGS, FLOW_ID, Live, live_hookline, log_in

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "img"


def populate(live: Live) -> int:
    """A believable hour of traffic; returns the id of the run to photograph (a failed one)."""
    emails = ["ada@lovelace.dev", "grace@hopper.dev", "Linus@Example.com", "margaret@hamilton.dev", "ken@unix.dev"]
    for n, email in enumerate(emails, 1):
        live.wait_done(live.send(live.payment(n, amount=1200 * n + 99, email=email)))
    failed = live.send(live.payment(6, amount=980000, currency="jpy", email="yuki@example.jp"))
    live.wait_done(failed)
    live.wait_done(live.send(live.payment(7, event_type="payment_intent.created")))
    live.wait_done(live.send(live.payment(8, amount=4999, email="alan@turing.dev")))
    return failed


def shoot(page: Page, base: str, run_id: int, out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1360, "height": 820})
    page.goto(f"{base}/runs")
    page.wait_for_selector("table.runs tbody tr")
    runs = out / "runs.png"
    page.screenshot(path=str(runs))
    page.goto(f"{base}/runs/{run_id}")
    page.wait_for_selector("pre[data-done]", state="attached")
    detail = out / "run-detail.png"
    page.screenshot(path=str(detail), full_page=True)
    page.goto(f"{base}/flows/{FLOW_ID}")
    page.wait_for_selector("svg.flow-diagram")
    flow = out / "flow.png"
    page.set_viewport_size({"width": 1360, "height": 960})  # the summary and the diagram; the source is below
    page.screenshot(path=str(flow))
    return [runs, detail, flow]


def take(browser: Browser, tmp: Path, out: Path = OUT) -> list[Path]:
    """A fresh live Hookline with realistic runs, photographed."""
    with live_hookline(tmp) as live:
        run_id = populate(live)
        page = browser.new_page()
        log_in(page, live.url)
        shots = shoot(page, live.url, run_id, out)
        page.close()
        return shots


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for path in take(browser, Path(tmp)):
            print(path.relative_to(ROOT))
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
