"""Domain errors reach HTTP in one place (web/errors.py STATUS), with the one JSON error shape.

The operator actions call the service without re-checking its conditions first, so a run that is gone,
a flow that broke or a run that cannot be retried is the same 404/409 whenever it happens (before,
``ui.replay`` checked the flow and then met ValueError inside the service: a 500). The store wraps every
database error, so ingress needs no SQLAlchemy to answer 503.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from pytest_httpserver import HTTPServer

from engine import errors
from engine.errors import (
    BadBody,
    EngineError,
    FlowNotLoaded,
    NotRetryable,
    RunNotFound,
    StoreError,
    StoreUnavailable,
    VerificationError,
    VerificationUnavailable,
)
from engine.sqlite_guard import DatabaseFileGone
from engine.store import RunStore
from tests.ui_helpers import ORDERS_FLOW, REJECTED_AMOUNT, Hookline, make_hookline, serve_target, visible_text
from web.errors import STATUS, status_of

TOKEN = "api-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# Errors that never meet a request: load time, run time (recorded on the step), start-up, a worker's lease.
NOT_A_RESPONSE = {errors.FlowError, errors.TemplateError, errors.FlowInvalid, errors.MissingEnvError,
                  errors.StepError, errors.HttpStepError, errors.LeaseLost, errors.SettingsError, errors.PluginError}


@pytest.fixture
def h(tmp_path: Path, httpserver: HTTPServer) -> Hookline:
    return make_hookline(tmp_path, serve_target(httpserver), api_token=TOKEN)  # pages open (loopback Host)


def order(n: int, amount: int = 5) -> dict[str, Any]:
    return {"id": f"evt_{n}", "order_id": f"o-{n}", "email": f"b{n}@example.com", "amount": amount}


def test_every_engine_error_is_mapped_or_declared_not_a_response() -> None:
    """A new error class must be given a status here or be named as one no request meets."""
    classes = {c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, EngineError)} - {EngineError}
    unmapped = {c for c in classes if status_of(c.__new__(c)) is None}
    assert unmapped == NOT_A_RESPONSE
    assert set(STATUS) <= classes


@pytest.mark.parametrize(("exc", "status", "message"), [
    (BadBody("body is not valid JSON"), 400, "body is not valid JSON"),
    (VerificationError("bad signature"), 401, "bad signature"),
    (RunNotFound(41), 404, "no run with id 41"),
    (FlowNotLoaded("orders", "replay on the original version instead"), 409,
     "flow 'orders' is not loaded (it has errors or was removed); replay on the original version instead"),
    (NotRetryable(41, "succeeded"), 409, "run 41 is succeeded; only failed runs can be retried from the failed step"),
    (StoreError("database error: relation runs_x does not exist"), 500, "storage error; the details are in the server log"),
    (VerificationUnavailable("secret not set"), 503, "secret not set"),
    (StoreUnavailable("database unavailable: connection refused"), 503, "storage unavailable, try again shortly"),
    (DatabaseFileGone("database file /x.db was deleted while in use"), 503, "storage unavailable, try again shortly"),
])
def test_one_status_and_the_json_shape(h: Hookline, exc: EngineError, status: int, message: str) -> None:
    def boom() -> Any:
        raise exc

    h.app.add_url_rule("/api/boom", "boom", boom)
    h.app.add_url_rule("/boom", "boom_page", boom)
    assert h.json("/api/boom", status, headers=AUTH) == {"ok": False, "error": message, "status": status}
    page = h.client.get("/boom")
    assert page.status_code == status
    assert message in visible_text(BeautifulSoup(page.get_data(as_text=True), "html.parser"))


def _broken(h: Hookline) -> None:
    (h.flows_dir / "orders.yaml").write_text(ORDERS_FLOW + "  - broken: {}\n")
    h.svc.catalog.refresh(force=True)


def test_page_actions_answer_404_and_409_not_500(h: Hookline) -> None:
    ok = h.send(order(1))
    csrf = h.csrf()

    def act(path: str, **form: str) -> tuple[int, str]:
        resp = h.client.post(path, data={"csrf_token": csrf, **form})
        return resp.status_code, resp.get_data(as_text=True)

    status, text = act("/runs/999/replay", version="original")
    assert status == 404 and "no run with id 999" in text
    status, text = act(f"/runs/{ok}/retry")
    assert status == 409 and f"run {ok} is succeeded; only failed runs can be retried" in text
    _broken(h)  # the flow breaks after the run page was shown: the replay meets it inside the service
    status, text = act(f"/runs/{ok}/replay", version="current")
    assert status == 409 and "flow 'orders' is not loaded" in visible_text(BeautifulSoup(text, "html.parser"))
    status, _ = act(f"/runs/{ok}/replay", version="original")
    assert status == 302  # the run's own version still replays
    assert h.client.get(f"/runs/{ok}/dry-run.json").status_code == 409


def test_api_actions_and_bulk_replay_refuse_whole(h: Hookline) -> None:
    ok = h.send(order(1))
    failed = h.send(order(2, amount=REJECTED_AMOUNT))
    assert h.client.post("/api/runs/999/retry", headers=AUTH).get_json() == {
        "ok": False, "error": "no run with id 999", "status": 404}
    assert h.client.post("/api/runs/999/dry-run", headers=AUTH).status_code == 404
    assert h.client.post(f"/api/runs/{ok}/retry", headers=AUTH).status_code == 409
    runs_before = len(h.json("/api/runs", headers=AUTH)["runs"])
    _broken(h)
    resp = h.client.post("/api/runs/replay", json={"flow": "orders"}, headers=AUTH)
    assert resp.status_code == 409
    assert resp.get_json()["error"] == ("flow 'orders' is not loaded (it has errors or was removed); "
                                        "nothing was replayed; replay on the original version instead")
    assert len(h.json("/api/runs", headers=AUTH)["runs"]) == runs_before
    assert h.client.post(f"/api/runs/{failed}/dry-run", headers=AUTH).status_code == 409
    resp = h.client.post("/api/runs/replay", json={"flow": "orders", "version": "original"}, headers=AUTH)
    assert resp.status_code == 201 and resp.get_json()["count"] == 2


def test_a_database_error_leaves_the_store_typed(pg_url: str) -> None:
    """Not a lost connection (StoreUnavailable) but still the store's: StoreError, one line, cause kept."""
    store = RunStore(pg_url)
    store.create_all()
    try:
        with pytest.raises(StoreError, match="^database error: PostgreSQL text fields cannot contain NUL") as caught:
            store.accept(flow_id="f", version="v", source="x", path="p", method="POST", query="", headers=[],
                         body=b"{}", content_type="text/plain\x00", dedupe_key=None, order_key=None, index={})
        assert not isinstance(caught.value, StoreUnavailable) and caught.value.__cause__ is not None
    finally:
        store.dispose()


def test_ingress_needs_no_sqlalchemy() -> None:
    source = (Path(__file__).resolve().parent.parent / "web" / "hooks.py").read_text()
    assert "sqlalchemy" not in source
