"""HOOKLINE_ALERT_URL: a real receiver on 127.0.0.1 hears once about each run that fails for good, at most once
per flow per interval, signed by a connection when one is named; the once-per-run and per-flow decisions hold
across workers on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import socket
import threading
import time
from typing import Any

import pytest
import standardwebhooks
from prometheus_client import REGISTRY

from engine import alerts, presets
from engine.alerts import Alert, failed_step
from engine.config import Settings
from engine.errors import SettingsError, StoreUnavailable
from engine.model import RunResult, RunStatus, StepResult, StepStatus
from engine.service import Service
from engine.store import RunStore
from tests.support import Target, free_port
from tests.test_service import accept, drain

FLOW = """
id: orders
steps:
  - id: shape
    transform:
      ref: "{{{{ event.id }}}}"
  - id: create
    http:
      url: {url}/create
      json: {{ref: "{{{{ steps.shape.ref }}}}"}}
      retry: {{max_attempts: 2, initial: 10ms, max_delay: 20ms}}
"""
WHSEC = "whsec_" + base64.b64encode(b"alert-signing-key-0123456789abcd").decode()
CONNECTIONS = """
connections:
  pager:
    type: standard-webhooks
    secret: ${ALERT_SIGNING_SECRET}
"""


def sent(outcome: str) -> float:
    return REGISTRY.get_sample_value("hookline_alerts_total", {"outcome": outcome}) or 0.0


def failing_service(make_service: Any, db_url: str, target: Target, flows: dict[str, str] | None = None,
                    env: dict[str, str] | None = None, **settings: Any) -> tuple[Service, Any]:
    target.script["/create"] = [(400, {"error": "no such customer"})]
    settings.setdefault("alert_url", f"{target.url}/alerts")
    svc, queue = make_service({"orders": FLOW.format(url=target.url), **(flows or {})}, db_url, env=env, **settings)
    svc.alerts.sleep = lambda _s: None  # the pauses between attempts; the attempts themselves are real
    return svc, queue


def fail_once(svc: Service, queue: Any, ref: str) -> int:
    run_id = int(accept(svc, {"id": ref}).run_id)
    drain(svc, queue)
    assert svc.store.get_run(run_id).run.status is RunStatus.FAILED
    return run_id


def test_a_run_that_fails_for_good_alerts_once_with_its_facts(make_service: Any, db_url: str, target: Target) -> None:
    before = sent("sent")
    svc, queue = failing_service(make_service, db_url, target, public_url="https://hookline.example.com/")
    run_id = fail_once(svc, queue, "o1")
    (seen,) = target.requests("/alerts")
    doc = seen.json()
    assert seen.method == "POST" and seen.headers["content-type"] == "application/json"
    assert seen.headers["idempotency-key"] == f"hookline-alert-{run_id}"
    assert doc.pop("failed_at").endswith("Z")
    assert doc == {"event": "run.failed", "flow": "orders", "run_id": run_id,
                   "run_url": f"https://hookline.example.com/runs/{run_id}", "step": "create",
                   "error": svc.store.get_run(run_id).run.error, "suppressed": 0}
    assert doc["error"].startswith("step create: POST 127.0.0.1:") and "400" in doc["error"]
    assert sent("sent") == before + 1
    # a second worker closing the same run (it was resumed after a crash) decides nothing new
    other = Service(svc.settings, svc.store, svc.catalog, http=svc.http, env={})
    assert other.alerts.run_failed(run_id, "orders", RunResult(RunStatus.FAILED, error="step create: again")) is None
    assert len(target.requests("/alerts")) == 1


def test_waiting_and_succeeded_runs_do_not_alert(make_service: Any, sqlite_url: str, target: Target) -> None:
    svc, queue = failing_service(make_service, sqlite_url, target)
    target.script["/create"] = [(503, {}), (200, {"id": "c1"})]
    run_id = int(accept(svc, {"id": "o1"}).run_id)
    assert svc.execute_run(queue.pop()[0]) is RunStatus.WAITING
    drain(svc, queue)
    assert svc.store.get_run(run_id).run.status is RunStatus.SUCCEEDED
    assert target.requests("/alerts") == []


def test_no_alert_url_no_alert(make_service: Any, sqlite_url: str, target: Target) -> None:
    svc, queue = failing_service(make_service, sqlite_url, target, alert_url="")
    run_id = fail_once(svc, queue, "o1")
    assert svc.alerts.run_failed(run_id, "orders", RunResult(RunStatus.FAILED)) is None
    assert target.requests("/alerts") == []


def test_one_alert_per_flow_per_interval_and_the_next_counts_the_rest(make_service: Any, db_url: str,
                                                                      target: Target) -> None:
    svc, queue = failing_service(make_service, db_url, target, alert_interval_s=600.0)
    now = [1_800_000_000.0]
    svc.alerts.clock = lambda: now[0]
    before = sent("suppressed")
    first = fail_once(svc, queue, "o1")
    fail_once(svc, queue, "o2")
    now[0] += 599
    fail_once(svc, queue, "o3")
    assert [s.json()["run_id"] for s in target.requests("/alerts")] == [first]
    assert sent("suppressed") == before + 2
    now[0] += 1  # the interval has passed since the first alert
    # retry-from-failed is a new run: it may alert again, and says how many failures were not alerted
    retry = svc.retry_from_failed(first)
    drain(svc, queue)
    last = target.requests("/alerts")[-1].json()
    assert (last["run_id"], last["suppressed"]) == (retry, 2)
    fail_once(svc, queue, "o4")
    assert len(target.requests("/alerts")) == 2


def test_slack_format_says_the_same_facts_in_text(make_service: Any, sqlite_url: str, target: Target) -> None:
    svc, queue = failing_service(make_service, sqlite_url, target, alert_format="Slack",
                                 public_url="https://hookline.example.com")
    run_id = fail_once(svc, queue, "o1")
    (seen,) = target.requests("/alerts")
    text = seen.json()["text"]
    assert list(seen.json()) == ["text"]
    assert f"<https://hookline.example.com/runs/{run_id}|run {run_id}>" in text
    assert "flow `orders` failed at step `create`" in text and "400" in text
    alert = Alert("a<b>", 7, "/runs/7", None, "x < y & <@U123>", 0.0, 3)
    assert alert.slack_text() == (":rotating_light: Hookline: run 7 (/runs/7) of flow `a&lt;b&gt;` failed\n"
                                  ">x &lt; y &amp; &lt;@U123&gt;\n"
                                  "3 more failures of this flow since the last alert (not alerted one by one)")


def test_alerts_are_signed_by_the_named_connection(make_service: Any, sqlite_url: str, target: Target) -> None:
    env = {"ALERT_SIGNING_SECRET": WHSEC}
    svc, queue = failing_service(make_service, sqlite_url, target, flows={"connections": CONNECTIONS}, env=env,
                                 alert_connection="pager")
    run_id = fail_once(svc, queue, "o1")
    (seen,) = target.requests("/alerts")
    assert seen.headers["webhook-id"] == f"msg_hookline-alert-{run_id}"
    assert standardwebhooks.Webhook(WHSEC).verify(seen.body, seen.headers)["run_id"] == run_id
    config, problems = presets.parse_verify({"provider": "standard-webhooks", "secret": "${ALERT_SIGNING_SECRET}"})
    assert config is not None, problems
    request = presets.Request.build(body=seen.body, headers=seen.headers, url=f"http://127.0.0.1{seen.path}")
    presets.verify_request(config, request, env=env, now=time.time())  # Hookline's own preset accepts it too


def test_a_bearer_connection_authenticates_alerts(make_service: Any, sqlite_url: str, target: Target) -> None:
    conns = "connections:\n  pager:\n    type: bearer\n    token: ${ALERT_TOKEN}\n"
    svc, queue = failing_service(make_service, sqlite_url, target, flows={"connections": conns},
                                 env={"ALERT_TOKEN": "pager-tok-77"}, alert_connection="pager")
    fail_once(svc, queue, "o1")
    (seen,) = target.requests("/alerts")
    assert seen.headers["authorization"] == "Bearer pager-tok-77"


class DownLedger:
    """A ledger whose database is gone."""

    def claim_alert(self, run_id: int, flow_id: str, interval: float, now: float | None = None) -> None:
        raise StoreUnavailable("database unavailable: connection refused")


def test_a_database_error_while_deciding_is_counted_never_raised(target: Target, http: Any,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    before = sent("failed")
    alerter = alerts.Alerter(Settings(alert_url=f"{target.url}/alerts"), DownLedger(), http)
    assert alerter.run_failed(1, "orders", RunResult(RunStatus.FAILED, error="step x: y")) == "failed"
    assert sent("failed") == before + 1 and target.requests("/alerts") == []
    assert "alert for run 1 of orders not sent: database unavailable: connection refused" in caplog.text


def test_a_missing_connection_or_variable_fails_the_alert_not_the_run(make_service: Any, sqlite_url: str,
                                                                    target: Target) -> None:
    before = sent("failed")
    svc, queue = failing_service(make_service, sqlite_url, target, flows={"connections": CONNECTIONS}, env={},
                                 alert_connection="pager")
    fail_once(svc, queue, "o1")  # ALERT_SIGNING_SECRET is not set
    assert target.requests("/alerts") == [] and sent("failed") == before + 1


@pytest.mark.parametrize("answer", [503, 404])
def test_a_failing_endpoint_is_tried_a_few_times_and_counted(make_service: Any, sqlite_url: str, target: Target,
                                                            answer: int, caplog: pytest.LogCaptureFixture) -> None:
    before = sent("failed")
    svc, queue = failing_service(make_service, sqlite_url, target)
    target.script["/alerts"] = [(answer, {})]
    run_id = fail_once(svc, queue, "o1")
    assert len(target.requests("/alerts")) == (alerts.ATTEMPTS if answer == 503 else 1)
    assert sent("failed") == before + 1
    assert svc.store.get_run(run_id).run.status is RunStatus.FAILED
    assert f"alert for run {run_id} of orders not delivered: answered {answer}" in caplog.text
    assert target.url not in caplog.text  # a Slack webhook URL is a secret: never logged


def test_an_unreachable_or_silent_endpoint_fails_within_its_attempts(make_service: Any, sqlite_url: str,
                                                                    target: Target, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    svc, queue = failing_service(make_service, sqlite_url, target, alert_url=f"http://127.0.0.1:{free_port()}/a",
                                 alert_interval_s=0.0)
    fail_once(svc, queue, "o1")
    assert "not delivered: connection failed" in caplog.text
    silent = socket.socket()  # connections are accepted by the kernel and never answered
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        monkeypatch.setattr(alerts, "ATTEMPT_TIMEOUT_S", 0.2)
        svc.alerts.url = f"http://127.0.0.1:{silent.getsockname()[1]}/a"
        fail_once(svc, queue, "o2")
        assert "not delivered: timed out after 0.2s" in caplog.text
    finally:
        silent.close()


def test_the_alert_carries_the_redacted_error_never_a_secret(make_service: Any, sqlite_url: str,
                                                            target: Target) -> None:
    flow = "id: leaky\nsteps:\n  - id: stop\n    fail: \"refused with token ${PARTNER_TOKEN}\"\n"
    svc, queue = failing_service(make_service, sqlite_url, target, flows={"leaky": flow},
                                 env={"PARTNER_TOKEN": "tok-very-secret-91"})
    run_id = int(accept(svc, {"id": "x"}, flow_id="leaky").run_id)
    drain(svc, queue)
    (seen,) = target.requests("/alerts")
    assert b"tok-very-secret-91" not in seen.body
    assert seen.json()["error"] == svc.store.get_run(run_id).run.error
    assert seen.json()["step"] == "stop"


def test_a_flow_version_that_no_longer_loads_alerts_without_a_step(make_service: Any, sqlite_url: str,
                                                                  target: Target) -> None:
    from sqlalchemy import update

    from engine.store.schema import FlowVersionRow

    svc, queue = failing_service(make_service, sqlite_url, target)
    run_id = int(accept(svc, {"id": "o1"}).run_id)
    with svc.store.engine.begin() as c:  # a stored version whose source this release refuses
        c.execute(update(FlowVersionRow).values(source="id: orders\nsteps: [{id: x, nope: 1}]\n"))
    assert svc.execute_run(queue.pop()[0]) is RunStatus.FAILED
    (seen,) = target.requests("/alerts")
    assert seen.json()["step"] is None and seen.json()["run_id"] == run_id
    assert "no longer loads" in seen.json()["error"]


def test_bad_alert_settings_fail_at_start_up(make_service: Any, sqlite_url: str) -> None:
    with pytest.raises(SettingsError, match="HOOKLINE_ALERT_FORMAT: expected json or slack, got 'teams'"):
        make_service({}, sqlite_url, alert_url="https://alerts.example.com/", alert_format="teams")
    with pytest.raises(SettingsError, match="HOOKLINE_ALERT_URL: expected an http"):
        alerts.check_settings(Settings(alert_url="alerts.example.com"))
    assert Settings.from_env({"HOOKLINE_ALERT_INTERVAL_S": "10m"}).alert_interval_s == 600.0


def test_a_bad_alert_url_is_refused_without_repeating_it() -> None:
    """A Slack webhook URL is a secret: a typo in its scheme must not print it at start-up (I9)."""
    for typo in ("hooks.slack.com/services/T0/B0/sEcReT123", "htps://hooks.slack.com/services/T0/B0/sEcReT123",
                 "https:///services/T0/B0/sEcReT123"):
        with pytest.raises(SettingsError) as err:
            alerts.check_settings(Settings(alert_url=typo))
        assert "sEcReT123" not in str(err.value) and "services" not in str(err.value)
        assert str(err.value).startswith("HOOKLINE_ALERT_URL: expected an http(s) URL")


def test_failed_step_is_the_path_the_error_names() -> None:
    step = StepResult("lines[a: b].post", StepStatus.FAILED, 1, 0)
    assert failed_step(RunResult(RunStatus.FAILED, [step], error="step lines[a: b].post: 500")) == "lines[a: b].post"
    assert failed_step(RunResult(RunStatus.FAILED, [], error="step notify: answered 500")) == "notify"
    assert failed_step(RunResult(RunStatus.FAILED, [], error="flow version v1 no longer loads: x")) is None


# --- the decisions in the database, across workers ---------------------------------------------------------


def runs(store: RunStore, n: int, flow_id: str = "f") -> list[int]:
    return [store.accept(flow_id=flow_id, version="v1", source="steps: []", path="f.yaml", method="POST", query="",
                         headers=[], body=b"{}", content_type="", dedupe_key=None).run_id for _ in range(n)]


def race(n: int, call: Any) -> list[Any]:
    """``call(i)`` on n threads released together; their results in thread order."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def one(i: int) -> None:
        barrier.wait(timeout=30)
        out[i] = call(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_one_decision_per_run_however_many_workers_close_it(db_url: str) -> None:
    stores = [RunStore(db_url) for _ in range(4)]  # four processes' engines and pools
    stores[0].create_all()
    (run_id,) = runs(stores[0], 1)
    try:
        decisions = race(8, lambda i: stores[i % 4].claim_alert(run_id, "f", 600.0))
    finally:
        for s in stores:
            s.dispose()
    assert [d for d in decisions if d is not None] == [alerts.AlertDecision(True, 0)]


def test_runs_of_one_flow_failing_at_once_alert_once(db_url: str) -> None:
    stores = [RunStore(db_url) for _ in range(4)]
    stores[0].create_all()
    ids = runs(stores[0], 8)
    other = runs(stores[0], 1, flow_id="g")[0]
    try:
        decisions = race(8, lambda i: stores[i % 4].claim_alert(ids[i], "f", 600.0, now=1000.0 + i))
        assert sorted(d.suppressed for d in decisions if not d.send) == list(range(1, 8))
        assert sum(d.send for d in decisions) == 1
        assert stores[1].claim_alert(other, "g", 600.0) == alerts.AlertDecision(True, 0)  # per flow
        (late,) = runs(stores[0], 1)
        assert stores[2].claim_alert(late, "f", 600.0, now=1700.0) == alerts.AlertDecision(True, 7)
    finally:
        for s in stores:
            s.dispose()


def test_alert_decisions_go_with_their_runs(store: RunStore) -> None:
    from sqlalchemy import func, select

    from engine.store.schema import AlertRunRow

    (run_id,) = runs(store, 1)
    claim = store.claim(run_id, "w", lease_s=30)
    assert claim is not None
    claim.close(RunResult(RunStatus.FAILED, error="x"), now=1000.0)
    assert store.claim_alert(run_id, "f", 600.0) is not None
    assert sum(store.prune(succeeded_before=0, failed_before=2000.0)) == 1
    with store.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(AlertRunRow)).scalar_one() == 0


def test_operations_doc_shows_the_payload_sent_and_rules_on_real_metrics() -> None:
    import json
    import re

    import yaml

    from engine import metrics
    from tests.support import ROOT

    doc = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = doc[doc.index("\n## Alerts\n"):doc.index("\n## The operator's view")]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    example = json.loads(next(text for lang, text in blocks if lang == "json"))
    assert list(example) == list(Alert("f", 1, "/runs/1", None, "e", 0.0, 0).document("json"))
    rules = yaml.safe_load(next(text for lang, text in blocks if lang == "yaml" and "groups:" in text))
    exprs = " ".join(rule["expr"] for group in rules["groups"] for rule in group["rules"])
    known = {c._name for c in vars(metrics).values() if hasattr(c, "_name")}  # counters' names without _total
    used = {name.removesuffix("_total") for name in re.findall(r"\bhookline_\w+", exprs)}
    assert used and used <= known, used - known
