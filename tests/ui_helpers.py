"""A real Hookline for UI, API and auth tests: SQLite in tmp_path, a flows directory, a Service whose
http steps reach a real server on 127.0.0.1 (pytest-httpserver), and the Flask test client.

Runs are created through real ingress (POST /hooks/<flow>) and executed with ``svc.execute_run``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from engine.catalog import FlowCatalog
from engine.config import Settings
from engine.service import Service
from engine.store import RunStore
from web import create_app

SECRET = "s3cr3t-Value-XYZ-987"
"""The value of CRM_SECRET: no page, JSON twin, API answer or fixture may contain it (I9)."""

ORDERS_FLOW = """\
id: orders
name: Orders to CRM and accounting
trigger:
  dedupe: $.id
  index:
    order: $.order_id
steps:
  - id: payment
    transform:
      email: "{{ event.email | lower }}"
      amount: "{{ event.amount }}"
      note: "{{ event.note | default('') }}"
  - id: crm
    http:
      method: POST
      url: ${TARGET_URL}/contacts?api_key=${CRM_SECRET}
      headers:
        X-Api-Token: ${CRM_SECRET}
      json:
        email: "{{ steps.payment.email }}"
      retry: {max_attempts: 1}
  - id: invoice
    when: steps.payment.amount > 0
    http:
      url: ${TARGET_URL}/invoices
      json:
        contact_id: "{{ steps.crm.response.json.id }}"
        amount: "{{ steps.payment.amount }}"
      retry: {max_attempts: 1}
"""

BROKEN_FLOW = """\
id: broken
steps:
  - id: first
    transform: {a: 1}
  - id: second
    nosuchstep: {}
"""

REJECTED_AMOUNT = 13
"""Invoices of this amount get 422 from the accounting target: a failed run on demand."""


def invoices(request: Request) -> Response:
    amount = request.get_json().get("amount")
    if amount == REJECTED_AMOUNT:
        body = {"error": "amount 13 is not allowed on this ledger"}
        return Response(json.dumps(body), status=422, content_type="application/json")
    return Response(json.dumps({"invoice": f"inv_{amount}"}), status=201, content_type="application/json")


def serve_target(httpserver: HTTPServer) -> str:
    httpserver.expect_request("/contacts", method="POST").respond_with_json({"id": "c_42"}, status=201)
    httpserver.expect_request("/invoices", method="POST").respond_with_handler(invoices)
    return httpserver.url_for("").rstrip("/")


@dataclass
class Hookline:
    app: Flask
    client: FlaskClient
    svc: Service
    store: RunStore
    settings: Settings
    flows_dir: Path
    enqueued: list[int] = field(default_factory=list)

    def send(self, body: Any, flow: str = "orders", *, run: bool = True, headers: dict[str, str] | None = None) -> int:
        """A webhook through real ingress; by default executed at once, as a worker would."""
        resp = self.client.post(f"/hooks/{flow}", json=body, headers=headers or {})
        assert resp.status_code in (200, 202), resp.get_data(as_text=True)
        run_id = int(resp.get_json()["run_id"])
        if run:
            if run_id in self.enqueued:
                self.enqueued.remove(run_id)
            self.svc.execute_run(run_id)
        return run_id

    def execute_enqueued(self) -> None:
        while self.enqueued:
            self.svc.execute_run(self.enqueued.pop(0))

    def json(self, path: str, status: int = 200, **kwargs: Any) -> Any:
        resp = self.client.get(path, **kwargs)
        assert resp.status_code == status, (path, resp.status_code, resp.get_data(as_text=True)[:500])
        return resp.get_json()

    def html(self, path: str, status: int = 200) -> BeautifulSoup:
        resp = self.client.get(path)
        assert resp.status_code == status, (path, resp.status_code, resp.get_data(as_text=True)[:500])
        return BeautifulSoup(resp.get_data(as_text=True), "html.parser")

    def csrf(self) -> str:
        """The session's CSRF token, as a browser reads it from any page."""
        meta = self.html("/runs").find("meta", attrs={"name": "csrf-token"})
        assert meta is not None
        return str(meta["content"])


def make_hookline(tmp_path: Path, target_url: str = "http://127.0.0.1:9", *, env: dict[str, str] | None = None,
                  flows: dict[str, str] | None = None, **overrides: Any) -> Hookline:
    flows_dir = tmp_path / "flows"
    flows_dir.mkdir(exist_ok=True)
    for name, text in (flows if flows is not None else {"orders": ORDERS_FLOW}).items():
        (flows_dir / f"{name}.yaml").write_text(text)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/h.db", flows_dir=str(flows_dir),
                        secret_key="test-secret-key", **overrides)
    store = RunStore(settings.database_url)
    store.create_all()
    enqueued: list[int] = []
    svc = Service(settings, store, FlowCatalog(flows_dir), enqueue=lambda run_id, delay: enqueued.append(run_id),
                  http=httpx.Client(timeout=5),
                  env={"TARGET_URL": target_url, "CRM_SECRET": SECRET} if env is None else env)
    app = create_app(settings, service=svc)
    app.testing = True
    return Hookline(app, app.test_client(), svc, store, settings, flows_dir, enqueued)


def visible_text(soup: BeautifulSoup) -> str:
    return re.sub(r"\s+", " ", soup.get_text(" "))
