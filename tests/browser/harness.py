"""A live Hookline for browser tests and screenshots: a real werkzeug server in a thread, SQLite, a
Service whose queue runs each run in a background thread, the built-in sandbox as the CRM, and an
"accounting" server on 127.0.0.1 that rejects invoices in JPY (422) so failed runs happen on demand.

Webhooks are signed with engine.presets.sign exactly as Stripe would sign them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response
from werkzeug.serving import BaseWSGIServer, make_server

from engine.catalog import FlowCatalog
from engine.config import Settings
from engine.model import Flow
from engine.presets import sign
from engine.service import Service
from engine.store import RunStore
from web import create_app

PASSWORD = "browser-test-password"
STRIPE_SECRET = "whsec_browser_test_secret"
FLOW_ID = "stripe_payment_sync"
# The shipped example, as users get it (lookup, switch create/update contact, invoice, on_failure alert).
FLOW = (Path(__file__).resolve().parents[2] / "flows" / f"{FLOW_ID}.yaml").read_text(encoding="utf-8")

LINES_ID = "order_lines"
LINES_FLOW = """\
# One stock call per line item (the sandbox answers each item's `status`), then a route by channel.
id: order_lines
steps:
  - id: lines
    foreach: $.items
    key: "{{ item.sku }}"
    steps:
      - id: reserve
        http:
          url: ${CRM_URL}/stock?sandbox_status={{ item.status | default(200) }}
          headers:
            Authorization: Bearer ${CRM_TOKEN}
          json: {sku: "{{ item.sku }}"}
          retry: {max_attempts: 1}
  - id: route
    switch:
      cases:
        - when: event.channel == "web"
          steps:
            - id: confirm
              http: {url: "${CRM_URL}/confirm", json: {order: "{{ event.id }}"}}
      default:
        - id: unknown_channel
          fail: "unknown channel {{ event.channel }}"
"""

BROWSER = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists() and not os.environ.get("CI"),
                       reason="needs Debian's chromium (apt-get install chromium; the Makefile does it)"),
]
"""The marks of every browser test module: ``pytestmark = BROWSER``."""

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

log = logging.getLogger("hookline.browser")


def _accounting(request: Request) -> Response:
    invoice = request.get_json()
    if invoice.get("currency") == "JPY":
        body = {"error": {"code": "currency_not_enabled", "message": "Currency JPY is not enabled for this ledger"}}
        return Response(json.dumps(body), status=422, content_type="application/json")
    body = {"id": f"inv_{uuid.uuid4().hex[:10]}", "status": "open", **invoice}
    return Response(json.dumps(body), status=201, content_type="application/json")


@dataclass
class Live:
    url: str
    svc: Service
    server: BaseWSGIServer
    env: dict[str, str]

    def payment(self, n: int, *, amount: int = 4200, currency: str = "eur", email: str | None = None,
                event_type: str = "payment_intent.succeeded", event_id: str | None = None) -> dict[str, Any]:
        return {
            "id": event_id or f"evt_{uuid.uuid4().hex[:14]}",
            "type": event_type,
            "data": {"object": {"id": f"pi_3Pq{n:04d}", "customer": f"cus_Q{n:04d}", "amount": amount,
                                "currency": currency, "receipt_email": email or f"Customer{n}@Example.com"}},
        }

    def send(self, event: dict[str, Any]) -> int:
        """POST a Stripe-signed webhook; returns the run id."""
        flow = self.svc.catalog.get(FLOW_ID)
        assert isinstance(flow, Flow) and flow.trigger.verify is not None
        body = json.dumps(event).encode()
        headers = sign(flow.trigger.verify, body, env=self.env, now=time.time())
        resp = httpx.post(f"{self.url}/hooks/{FLOW_ID}", content=body,
                          headers={**headers, "Content-Type": "application/json", "User-Agent": "Stripe/1.0"})
        assert resp.status_code in (200, 202), resp.text
        return int(resp.json()["run_id"])

    def send_unsigned(self, flow_id: str, event: dict[str, Any]) -> int:
        """POST a webhook to a flow without verification; returns the run id."""
        resp = httpx.post(f"{self.url}/hooks/{flow_id}", json=event)
        assert resp.status_code in (200, 202), resp.text
        return int(resp.json()["run_id"])

    def wait_done(self, run_id: int, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.svc.store.get_run_record(run_id)
            if run is not None and run.status.terminal:
                return run.status.value
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} did not finish in {timeout}s")


@contextmanager
def live_hookline(tmp: Path, *, password: str | None = PASSWORD) -> Iterator[Live]:
    flows = tmp / "flows"
    flows.mkdir(parents=True, exist_ok=True)
    (flows / f"{FLOW_ID}.yaml").write_text(FLOW)
    (flows / f"{LINES_ID}.yaml").write_text(LINES_FLOW)
    accounting = HTTPServer()
    accounting.expect_request("/ledger/invoices", method="POST").respond_with_handler(_accounting)
    accounting.start()
    settings = Settings(database_url=f"sqlite:///{tmp}/hookline.db", flows_dir=str(flows), secret_key="browser",
                        admin_password=password or "")
    store = RunStore(settings.database_url)
    store.create_all()
    env = {"STRIPE_WEBHOOK_SECRET": STRIPE_SECRET, "CRM_TOKEN": "crm_live_token_4242",
           "ACCOUNTING_URL": accounting.url_for("/ledger").rstrip("/")}
    holder: dict[str, Service] = {}

    def execute(run_id: int) -> None:
        try:
            holder["svc"].execute_run(run_id)
        except Exception:  # a crash here would be invisible in the browser; put it in the test log
            log.exception("run %s crashed", run_id)

    def enqueue(run_id: int, delay: float) -> None:
        timer = threading.Timer(delay, execute, args=(run_id,))
        timer.daemon = True
        timer.start()

    svc = Service(settings, store, FlowCatalog(flows), enqueue=enqueue, env=env)
    holder["svc"] = svc
    app = create_app(settings, service=svc)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    env["CRM_URL"] = f"{url}/sandbox/crm"
    env["ALERT_URL"] = f"{url}/sandbox/alerts"  # the flow's on_failure alert; its default is port 8000
    thread = threading.Thread(target=server.serve_forever, name="hookline-test-web", daemon=True)
    thread.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        yield Live(url, svc, server, env)
    finally:
        server.shutdown()
        thread.join(5)
        accounting.clear()
        accounting.stop()
        svc.http.close()
        store.dispose()


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button")
    page.wait_for_url(f"{base}/flows")


@contextmanager
def logged_in_page(base: str, *, timeout_ms: int = 10_000) -> Iterator[Page]:
    """A page of Debian's chromium logged in to the Hookline at ``base``; a JavaScript error on it fails the test."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        log_in(page, base)
        yield page
        context.close()
        browser.close()
        assert errors == [], f"JavaScript errors: {errors}"
