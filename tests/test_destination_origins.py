"""Destination protection is keyed by origin (scheme://host:port): a failing service on one port of a host
does not hold back calls to another port of the same host (issue 15)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from engine.config import Settings
from engine.destinations import Limits, destination_key, origin_of, parse_destinations
from engine.errors import SettingsError
from engine.model import RunStatus
from engine.store import RunStore
from engine.store.gate import StoreGate
from tests.conftest import make_flow
from tests.support import Target, start_target
from tests.test_service import accept, drain


@pytest.mark.parametrize(("url", "origin"), [
    ("http://127.0.0.1:8150/sandbox/x?q=1", "http://127.0.0.1:8150"),
    ("HTTPS://API.Example.com/v1", "https://api.example.com:443"),
    ("http://user:pw@crm.example:80/", "http://crm.example:80"),
    ("http://[::1]:8000/a", "http://[::1]:8000"),
    ("https://[2001:DB8::1]/", "https://[2001:db8::1]:443"),
])
def test_an_origin_has_one_spelling(url: str, origin: str) -> None:
    assert origin_of(url) == origin


@pytest.mark.parametrize("url", ["ftp://example.com/x", "/relative", "http://:80/", "http://h:99999/", "http://h:x/"])
def test_urls_without_an_http_origin_have_none(url: str) -> None:
    assert origin_of(url) is None


def test_destination_keys_are_origins_or_bare_hosts() -> None:
    assert destination_key("https://API.example.com:8443") == "https://api.example.com:8443"
    assert destination_key("http://crm.example") == "http://crm.example:80"
    assert destination_key("CRM.example") == "crm.example"
    assert destination_key("[::1]") == "::1" and destination_key("::1") == "::1"
    for bad in ("127.0.0.1:8150", "https://api.example.com/v1", "crm.example/v1", ""):
        with pytest.raises(ValueError):
            destination_key(bad)


def test_a_host_with_a_port_but_no_scheme_is_refused_at_start_up_naming_it() -> None:
    with pytest.raises(SettingsError, match=r"'127.0.0.1:8150': write an origin with its scheme "
                                            r"\(http://127.0.0.1:8150\) or a bare host"):
        parse_destinations('{"127.0.0.1:8150": {"rate": "1/s"}}')


def test_an_origin_entry_wins_over_its_host_entry_and_a_host_entry_covers_every_port() -> None:
    settings = Settings(destinations=json.dumps({"crm.example": {"rate": "5/s"},
                                                 "https://crm.example:8443": {"rate": "1/s", "concurrency": 2}}))
    gate = StoreGate(RunStore("sqlite://"), settings)
    step = make_flow([{"id": "call", "http": {"url": "https://crm.example/x"}}]).steps[0]
    assert gate.limits("https://crm.example:8443", step) == Limits(rate=1.0, concurrency=2)
    assert gate.limits("https://crm.example:443", step).rate == 5.0
    assert gate.limits("http://crm.example:8080", step).rate == 5.0
    assert gate.limits("https://other.example:443", step) == Limits()


def test_the_destinations_list_shows_origins_and_leaves_out_rows_from_before_origins(store: RunStore) -> None:
    opens = Limits(breaker_failures=1)
    store.destination_settle("crm.example", opens, "old", failed=True)  # a row as keyed before issue 15
    store.destination_settle("http://127.0.0.1:8150", opens, "new", failed=True)
    assert [(d.origin, d.state) for d in store.destinations()] == [("http://127.0.0.1:8150", "open")]


def _flow(flow_id: str, url: str) -> str:
    return f"""
id: {flow_id}
steps:
  - id: call
    http:
      url: {url}/call
      retry: {{max_attempts: 1}}
"""


@pytest.fixture
def second_target() -> Iterator[Target]:
    t = start_target()
    yield t
    t.close()


def test_a_failing_port_opens_its_circuit_and_another_port_of_the_host_is_still_called(
        make_service: Any, db_url: str, target: Target, second_target: Target) -> None:
    """The issue's case: 127.0.0.1:A failing blocked the alert endpoint on 127.0.0.1:B."""
    failing, alerting = target, second_target
    assert failing.url.split(":")[1] == alerting.url.split(":")[1] and failing.url != alerting.url
    failing.script["/call"] = [(503, {})]
    svc, queue = make_service({"pay": _flow("pay", failing.url), "alert": _flow("alert", alerting.url)}, db_url,
                              breaker_failures=2, breaker_cooldown_s=600.0)
    first = [accept(svc, {"n": i}, "pay").run_id for i in range(2)]
    drain(svc, queue)
    assert [svc.store.get_run_record(i).status for i in first] == [RunStatus.FAILED] * 2
    held = accept(svc, {"n": 3}, "pay").run_id
    assert svc.execute_run(held) is RunStatus.WAITING
    record = svc.store.get_run_record(held)
    assert record.status is RunStatus.WAITING
    assert record.reason == f"step call: circuit open for {failing.url} after 2 consecutive failures"
    assert len(failing.requests("/call")) == 2  # the held run made no call

    sent = accept(svc, {"n": 4}, "alert").run_id
    assert svc.execute_run(sent) is RunStatus.SUCCEEDED
    assert svc.store.get_run_record(sent).status is RunStatus.SUCCEEDED
    assert len(alerting.requests("/call")) == 1
    states = {d.origin: d.state for d in svc.store.destinations()}
    assert states[failing.url] == "open" and states.get(alerting.url, "closed") == "closed"


def test_an_origin_longer_than_its_column_is_still_protected_on_its_own(store: RunStore) -> None:
    """A 253-character host (DNS's longest, from event data under allow_hosts) with its scheme and port is
    wider than the key column; PostgreSQL refused it, so a failing call to it could not be recorded."""
    labels = ["a" * 61, "b" * 61, "c" * 61, "d" * 59]
    host = ".".join(labels) + ".example"
    assert len(host) == 253
    first, second = f"https://{host}:8443", f"https://{host}:8444"
    opens = Limits(breaker_failures=1, breaker_cooldown=600.0, concurrency=1)
    assert store.destination_admit(first, opens, "run-1", 30.0).allowed
    assert store.destination_settle(first, opens, "run-1", failed=True).state == "open"
    refused = store.destination_admit(first, opens, "run-2", 30.0)
    assert not refused.allowed and refused.reason.startswith(f"circuit open for {first} after 1")
    assert store.destination(first) is not None and store.destination(first).origin == first
    assert store.destination(second) is None and store.destination_admit(second, opens, "run-3", 30.0).allowed
