"""foreach, switch, on_failure, on_error and fail, through the Service on real stores (SQLite and PostgreSQL)
and a real HTTP target: what users rely on is the calls made, their Idempotency-Keys, and what resumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.loader import load_flow_file
from engine.model import RunStatus, StepStatus
from tests.support import ROOT, Target
from tests.test_service import accept, drain


def flow(steps: list[dict[str, Any]], **extra: Any) -> str:
    return yaml.safe_dump({"id": "cf", "trigger": {"dedupe": "$.id"}, "steps": steps, **extra}, sort_keys=False)


def decrement(url: str, **http: Any) -> dict[str, Any]:
    return {"id": "decrement", "http": {"method": "POST", "url": f"{url}/decrement",
                                        "json": {"sku": "{{ item.sku }}", "qty": "{{ item.quantity }}"}, **http}}


ITEMS = [{"sku": f"sku-{i}", "quantity": i} for i in range(1, 6)]
FAST_RETRY = {"max_attempts": 3, "initial": "10ms", "max_delay": "20ms"}


def run_once(svc: Any, queue: Any, body: dict[str, Any]) -> int:
    """Accept and execute one run as far as it goes without waiting for retries."""
    run_id = accept(svc, body, "cf").run_id
    queue.pop()
    svc.execute_run(run_id)
    return int(run_id)


def paths(svc: Any, run_id: int) -> list[tuple[str, str]]:
    return [(s.path, s.status.value) for s in svc.store.get_run(run_id).steps]


def test_foreach_makes_one_call_per_item_with_its_own_key(make_service: Any, db_url: str, target: Target) -> None:
    steps = [{"id": "lines", "foreach": "$.line_items", "steps": [decrement(target.url)]},
             {"id": "summary", "transform": {"n": "{{ steps.lines | length }}",
                                             "first": "{{ steps.lines[0].response.json.id }}"}}]
    svc, queue = make_service({"cf": flow(steps)}, db_url)
    run_id = accept(svc, {"id": "o1", "line_items": ITEMS}, "cf").run_id
    drain(svc, queue)
    calls = target.requests("/decrement")
    assert [c.json() for c in calls] == [{"sku": i["sku"], "qty": i["quantity"]} for i in ITEMS]
    keys = [c.headers["idempotency-key"] for c in calls]
    assert len(set(keys)) == 5
    detail = svc.store.get_run(run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert [s.path for s in detail.steps] == [f"lines[{i}].decrement" for i in range(5)] + ["lines", "summary"]
    assert [s.idempotency_key for s in detail.steps[:5]] == keys
    assert detail.steps[-1].output == {"n": 5, "first": "t1"}


def test_foreach_key_names_the_paths_and_survives_a_reordered_list(make_service: Any, db_url: str,
                                                                      target: Target) -> None:
    steps = [{"id": "lines", "foreach": "{{ event.line_items }}", "key": "{{ item.sku }}",
              "steps": [decrement(target.url)]}]
    svc, queue = make_service({"cf": flow(steps)}, db_url)
    first = accept(svc, {"id": "o1", "line_items": ITEMS[:2]}, "cf").run_id
    second = accept(svc, {"id": "o2", "line_items": list(reversed(ITEMS[:2]))}, "cf").run_id
    drain(svc, queue)
    assert [p for p, _ in paths(svc, first)] == ["lines[sku-1].decrement", "lines[sku-2].decrement", "lines"]
    assert [p for p, _ in paths(svc, second)] == ["lines[sku-2].decrement", "lines[sku-1].decrement", "lines"]


def test_a_503_on_item_4_resumes_at_item_4_with_its_key(make_service: Any, db_url: str, target: Target) -> None:
    target.script["/decrement"] = [(200, {"id": "a"})] * 3 + [(503, {"error": "busy"}), (200, {"id": "d"})]
    steps = [{"id": "lines", "foreach": "$.line_items", "steps": [decrement(target.url, retry=FAST_RETRY)]}]
    svc, queue = make_service({"cf": flow(steps)}, db_url)
    run_id = run_once(svc, queue, {"id": "o1", "line_items": ITEMS})
    assert svc.store.get_run_record(run_id).status is RunStatus.WAITING
    drain(svc, queue)
    calls = target.requests("/decrement")
    assert [c.json()["sku"] for c in calls] == ["sku-1", "sku-2", "sku-3", "sku-4", "sku-4", "sku-5"]
    keys = [c.headers["idempotency-key"] for c in calls]
    assert keys[3] == keys[4] and len(set(keys)) == 5
    detail = svc.store.get_run(run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert [(s.path, s.attempt, s.status) for s in detail.steps if s.path == "lines[3].decrement"] == [
        ("lines[3].decrement", 1, StepStatus.FAILED), ("lines[3].decrement", 2, StepStatus.SUCCEEDED)]


def test_max_items_exceeded_fails_with_a_clear_message_and_no_call(make_service: Any, db_url: str,
                                                                    target: Target) -> None:
    steps = [{"id": "lines", "foreach": "$.line_items", "max_items": 3, "steps": [decrement(target.url)]}]
    svc, queue = make_service({"cf": flow(steps)}, db_url)
    run_id = run_once(svc, queue, {"id": "o1", "line_items": ITEMS})
    run = svc.store.get_run_record(run_id)
    assert run.status is RunStatus.FAILED
    assert run.error == "step lines: 5 items, more than max_items 3; nothing was sent"
    assert target.requests() == []


def test_an_item_that_fails_for_good_is_named_and_retry_from_step_resumes_there(
        make_service: Any, db_url: str, target: Target) -> None:
    target.script["/decrement"] = [(200, {"id": "a"}), (200, {"id": "b"}), (409, {"error": "out of stock"}),
                                   (200, {"id": "c"})]
    steps = [{"id": "lines", "foreach": "$.line_items", "steps": [decrement(target.url)]}]
    svc, queue = make_service({"cf": flow(steps)}, db_url)
    run_id = run_once(svc, queue, {"id": "o1", "line_items": ITEMS[:4]})
    run = svc.store.get_run_record(run_id)
    assert run.status is RunStatus.FAILED
    assert run.error.startswith("step lines[2].decrement: POST 127.0.0.1:") and "answered 409" in run.error
    retry_id = svc.retry_from_failed(run_id)
    drain(svc, queue)
    assert [c.json()["sku"] for c in target.requests("/decrement")] == ["sku-1", "sku-2", "sku-3", "sku-3", "sku-4"]
    assert svc.store.get_run_record(retry_id).status is RunStatus.SUCCEEDED


def test_concurrent_items_each_call_once(make_service: Any, db_url: str, target: Target) -> None:
    target.delay = 0.05
    steps = [{"id": "lines", "foreach": "$.line_items", "concurrency": 3, "steps": [decrement(target.url)]}]
    svc, queue = make_service({"cf": flow(steps)}, db_url)
    run_id = accept(svc, {"id": "o1", "line_items": ITEMS}, "cf").run_id
    drain(svc, queue)
    assert sorted(c.json()["sku"] for c in target.requests("/decrement")) == [i["sku"] for i in ITEMS]
    detail = svc.store.get_run(run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    lines = [s for s in detail.steps if s.path == "lines"][0]
    assert [o["response"]["status"] for o in lines.output] == [200] * 5  # in item order, whatever finished first
    items = sorted((s.path, s.status) for s in detail.steps if s.path != "lines")
    assert items == [(f"lines[{i}].decrement", StepStatus.SUCCEEDED) for i in range(5)]  # every result recorded


SWITCH = [
    {"id": "route", "switch": {
        "cases": [
            {"when": 'event.type == "invoice.paid"', "steps": [
                {"id": "invoice", "http": {"url": "{url}/invoices", "json": {"id": "{{ event.id }}"}}}]},
            {"when": 'event.type == "customer.created"', "steps": [
                {"id": "contact", "http": {"url": "{url}/contacts", "json": {"id": "{{ event.id }}"}}}]},
        ],
        "default": [{"id": "unknown", "fail": "unexpected event {{ event.type }}"}]}},
    {"id": "after", "transform": {"case": "{{ steps.route.case }}", "invoice": "{{ steps.invoice is none }}",
                                  "contact": "{{ steps.contact.response.status if steps.contact else none }}"}},
]


def test_switch_runs_exactly_the_first_matching_case(make_service: Any, db_url: str, target: Target) -> None:
    text = flow(SWITCH).replace("{url}", target.url)
    svc, queue = make_service({"cf": text}, db_url)
    paid = accept(svc, {"id": "e1", "type": "customer.created"}, "cf").run_id
    other = accept(svc, {"id": "e2", "type": "charge.refunded"}, "cf").run_id
    drain(svc, queue)
    assert [s.path for s in target.requests()] == ["/contacts"]
    detail = svc.store.get_run(paid)
    assert [s.path for s in detail.steps] == ["route.1.contact", "route", "after"]
    assert detail.steps[-1].output == {"case": 1, "invoice": True, "contact": 200}
    failed = svc.store.get_run_record(other)
    assert failed.status is RunStatus.FAILED and failed.error == "step route.default.unknown: unexpected event charge.refunded"


def test_on_failure_runs_once_when_retries_are_exhausted_and_never_on_success(
        make_service: Any, db_url: str, target: Target) -> None:
    target.script["/crm"] = [(503, {"error": "down"})]
    steps = [{"id": "crm", "http": {"url": target.url + "/{{ event.crm }}", "json": {"id": "{{ event.id }}"},
                                    "retry": FAST_RETRY}}]
    handler = [{"id": "alert", "http": {"url": f"{target.url}/alerts", "json": {
        "run": "{{ run.id }}", "step": "{{ error.step }}", "message": "{{ error.message }}",
        "status": "{{ error.status }}", "attempts": "{{ error.attempts }}"}}}]
    svc, queue = make_service({"cf": flow(steps, on_failure=handler)}, db_url)
    bad = accept(svc, {"id": "o1", "crm": "crm"}, "cf").run_id
    good = accept(svc, {"id": "o2", "crm": "fine"}, "cf").run_id
    drain(svc, queue)
    assert len(target.requests("/crm")) == 3
    alerts = [a.json() for a in target.requests("/alerts")]
    assert alerts == [{"run": bad, "step": "crm", "status": 503, "attempts": 3,
                       "message": alerts[0]["message"]}]
    assert "answered 503" in alerts[0]["message"] and "gave up after 3 attempts" in alerts[0]["message"]
    detail = svc.store.get_run(bad)
    assert detail.run.status is RunStatus.FAILED
    assert [(s.path, s.status.value) for s in detail.steps][-1] == ("on_failure.alert", "succeeded")
    assert svc.store.get_run_record(good).status is RunStatus.SUCCEEDED


def test_on_error_continue_keeps_the_error_and_the_run_goes_on(make_service: Any, db_url: str,
                                                                target: Target) -> None:
    target.script["/chat"] = [(400, {"error": "bad channel"})]
    steps = [{"id": "notify", "on_error": "continue", "http": {"url": f"{target.url}/chat", "json": {"t": 1}}},
             {"id": "after", "transform": {"failed": "{{ steps.notify.error is not none }}",
                                           "status": "{{ steps.notify.error.status }}"}}]
    svc, queue = make_service({"cf": flow(steps)}, db_url)
    run_id = accept(svc, {"id": "o1"}, "cf").run_id
    drain(svc, queue)
    detail = svc.store.get_run(run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert detail.steps[0].status is StepStatus.FAILED and "(on_error: continue)" in detail.steps[0].error_message
    assert detail.steps[-1].output == {"failed": True, "status": 400}


def test_a_resumed_run_computes_what_the_first_attempt_computed(make_service: Any, db_url: str,
                                                                 target: Target) -> None:
    """The reproduction: a transform holding ${CRM_SECRET_URL} and a value over the stored-size cap, then a call that
    gets one 503. Attempt 2 must send the real URL and the whole value, never `${CRM_SECRET_URL}` or a truncation marker."""
    target.script["/big"] = [(200, {"blob": "x" * 5000})]
    target.script["/contacts"] = [(503, {}), (201, {"id": "c1"})]
    steps = [{"id": "cfg", "transform": {"base": "${CRM_SECRET_URL}"}},
             {"id": "big", "http": {"url": "${CRM_SECRET_URL}/big", "json": {}}},
             {"id": "create", "http": {"url": "{{ steps.cfg.base }}/contacts", "allow_hosts": ["127.0.0.1"],
                                       "json": {"blob": "{{ steps.big.response.json.blob }}"}, "retry": FAST_RETRY}}]
    svc, queue = make_service({"cf": flow(steps)}, db_url, env={"CRM_SECRET_URL": target.url}, max_stored_body=1000)
    run_id = accept(svc, {"id": "o1"}, "cf").run_id
    drain(svc, queue)
    creates = target.requests("/contacts")
    assert len(creates) == 2 and [c.json() for c in creates] == [{"blob": "x" * 5000}] * 2
    assert len(target.requests("/big")) == 1
    detail = svc.store.get_run(run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    recorded = json.dumps([s.output for s in detail.steps])
    assert target.url not in recorded and "${CRM_SECRET_URL}" in recorded and "_truncated" in recorded


def test_resume_state_holds_no_secret(make_service: Any, db_url: str, target: Target) -> None:
    """A target that echoes the token: the kept result names it, the database never holds it (I9)."""
    import base64

    target.script["/echo"] = [(200, {"seen": "Bearer s3cr3t-token-value",
                                     "b64": base64.b64encode(b"user:s3cr3t-token-value").decode()})]
    target.script["/next"] = [(503, {}), (200, {})]
    steps = [{"id": "echo", "http": {"url": f"{target.url}/echo", "headers": {"Authorization": "Bearer ${TOKEN}"}}},
             {"id": "next", "http": {"url": f"{target.url}/next", "json": {"seen": "{{ steps.echo.response.json.seen }}"},
                                     "retry": FAST_RETRY}}]
    svc, queue = make_service({"cf": flow(steps)}, db_url, env={"TOKEN": "s3cr3t-token-value"})
    accept(svc, {"id": "o1"}, "cf")
    drain(svc, queue)
    assert [c.json() for c in target.requests("/next")] == [{"seen": "Bearer s3cr3t-token-value"}] * 2
    with svc.store.engine.connect() as conn:
        from sqlalchemy import text
        rows = conn.execute(text("select output, state, response from step_runs")).all()
    dump = json.dumps([list(r) for r in rows], default=str)
    assert "s3cr3t-token-value" not in dump and "czNjcjN0LXRva2VuLXZhbHVl" not in dump


@pytest.mark.parametrize("name", ["order_sync"])
def test_the_issue_example_loads_and_routes(name: str, make_service: Any, db_url: str, target: Target) -> None:
    path = ROOT / "flows" / f"{name}.yaml"
    load_flow_file(path)
    env = {k: target.url for k in ("INVENTORY_URL", "ACCOUNTING_URL", "CHAT_URL", "ALERT_URL")}
    svc, queue = make_service({name: Path(path).read_text()}, db_url, env=env)
    body = {"id": 7, "financial_status": "paid", "line_items": ITEMS[:3]}
    run_id = accept(svc, body, name).run_id
    drain(svc, queue)
    assert [s.path for s in target.requests()].count("/decrement") == 3
    assert [s.path for s in target.requests()][-2:] == ["/invoices", "/post"]
    detail = svc.store.get_run(run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert "lines[sku-1].decrement" in [s.path for s in detail.steps]
    unknown = accept(svc, {"id": 8, "financial_status": "pending", "line_items": []}, name).run_id
    drain(svc, queue)
    run = svc.store.get_run_record(unknown)
    assert run.status is RunStatus.FAILED and "order 8 has unknown status pending" in run.error
    alerts = target.requests("/alerts")
    assert [a.json()["step"] for a in alerts] == ["route.default.unknown_status"]


def test_a_dry_run_of_a_stored_run_follows_its_recorded_responses(make_service: Any, db_url: str,
                                                                    target: Target) -> None:
    target.script["/lookup"] = [(200, {"id": "ct_7"})]
    steps = [{"id": "lookup", "http": {"method": "GET", "url": f"{target.url}/lookup", "success": [200, 404]}},
             {"id": "contact", "switch": {
                 "cases": [{"when": "steps.lookup.response.status == 200", "steps": [
                     {"id": "update", "http": {"method": "PATCH",
                                               "url": target.url + "/c/{{ steps.lookup.response.json.id }}"}}]}],
                 "default": [{"id": "create", "http": {"url": f"{target.url}/c"}}]}}]
    svc, queue = make_service({"cf": flow(steps)}, db_url)
    run_id = accept(svc, {"id": "o1"}, "cf").run_id
    drain(svc, queue)
    sent = len(target.requests())
    result = svc.dry_run(run_id)
    assert len(target.requests()) == sent
    assert [s.path for s in result.steps] == ["lookup", "contact.0.update", "contact"]
    assert result.steps[1].request["url"] == f"{target.url}/c/ct_7"
