from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from engine.model import RunInfo, RunStatus, StepResult, StepStatus
from engine.runner import idempotency_key, run_flow, run_to_end
from engine.steps import RetryPolicy
from tests.conftest import make_event, make_flow
from tests.support import Target


def http_step(sid: str = "call", **kw: Any) -> dict[str, Any]:
    return {"id": sid, "http": {"method": "POST", **kw}}


class ListRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def step_started(self, step: Any, path: str, attempt: int, started_at: float, idempotency_key: str) -> None:
        self.events.append(("started", (path, attempt, idempotency_key)))

    def step_finished(self, result: StepResult) -> None:
        self.events.append(("finished", (result.path, result.status, result.attempt)))


def test_request_rendering_with_a_transport() -> None:
    seen: list[httpx.Request] = []
    client = httpx.Client(transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(202, json={"id": 9})))
    flow = make_flow([http_step(url="https://api.test/orders/{{ event.id }}", query={"q": "$.id"},
                                headers={"X-Flow": "{{ run.flow }}"}, json={"n": "{{ event.n * 2 }}"})])
    result = run_flow(flow, make_event(n=21), http=client, run=RunInfo(id=5, flow="test_flow"))
    assert result.status is RunStatus.SUCCEEDED
    assert str(seen[0].url) == "https://api.test/orders/evt_1?q=evt_1"
    assert json.loads(seen[0].content) == {"n": 42}
    assert seen[0].headers["x-flow"] == "test_flow"
    assert seen[0].headers["idempotency-key"] == idempotency_key("test_flow", 5, "call")
    assert result.steps[0].output["response"]["json"] == {"id": 9}


def test_filter_false_ends_run_as_filtered() -> None:
    flow = make_flow([{"id": "f", "filter": "event.type == 'paid'"}, {"id": "t", "transform": {"a": 1}}])
    result = run_flow(flow, make_event(type="refund"))
    assert result.status is RunStatus.FILTERED
    assert [s.status for s in result.steps] == [StepStatus.FILTERED]


def test_when_false_skips_the_step() -> None:
    flow = make_flow([{"id": "a", "transform": {"v": "{{ event.v }}"}},
                      {"id": "b", "when": "steps.a.v > 0", "transform": {"x": 1}},
                      {"id": "c", "transform": {"b": "{{ steps.b }}"}}])
    result = run_flow(flow, make_event(v=0))
    assert [s.status for s in result.steps] == [StepStatus.SUCCEEDED, StepStatus.SKIPPED, StepStatus.SUCCEEDED]
    assert result.steps[2].output == {"b": None}


def test_done_steps_are_never_executed_again() -> None:
    calls: list[httpx.Request] = []
    client = httpx.Client(transport=httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200, json={})))
    flow = make_flow([http_step("a", url="https://x.test/a"), http_step("b", url="https://x.test/b")])
    done = {"a": StepResult("a", StepStatus.SUCCEEDED, output={"response": {"json": {"id": 1}}},
                            state={"status": "succeeded", "output": {"response": {"json": {"id": 1}}}})}
    result = run_flow(flow, make_event(), http=client, done=done, attempts={"a": 1})
    assert [str(r.url) for r in calls] == ["https://x.test/b"]
    assert [s.path for s in result.steps] == ["b"]


def test_template_error_at_run_time_fails_the_step_with_location() -> None:
    flow = make_flow([{"id": "t", "transform": {"x": "{{ event.nope.deeper }}"}}])
    result = run_flow(flow, make_event())
    assert result.status is RunStatus.FAILED
    assert result.steps[0].error_type == "TemplateError"
    assert "test_flow.yaml:" in (result.steps[0].error_message or "") and "nope" in (result.error or "")


def test_missing_env_fails_the_step_naming_the_variable() -> None:
    flow = make_flow([http_step(url="${MISSING_URL}/x")])
    result = run_flow(flow, make_event(), env={})
    assert result.status is RunStatus.FAILED and "MISSING_URL" in (result.error or "")


def test_secrets_from_env_never_reach_the_record() -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"echo": r.url.path})))
    flow = make_flow([http_step(url="https://api.test/${TENANT_TOKEN}/x", headers={"X-Key": "k-${API_KEY}"},
                                json={"k": "${API_KEY}"})])
    result = run_flow(flow, make_event(), http=client, env={"API_KEY": "sk_live_123456", "TENANT_TOKEN": "acme-secret"})
    dump = json.dumps([vars(s) for s in result.steps], default=str)
    assert "sk_live_123456" not in dump and "acme-secret" not in dump
    assert "${API_KEY}" in dump


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (408, True), (429, True),
                                                   (400, False), (404, False), (422, False)])
def test_status_classification(target: Target, http: httpx.Client, status: int, retryable: bool) -> None:
    target.script["/x"] = [(status, {"error": "nope"})]
    flow = make_flow([http_step(url=f"{target.url}/x", retry={"max_attempts": 3, "initial": "1s"})])
    result = run_flow(flow, make_event(), http=http, rng=lambda: 0.5)
    assert result.status is (RunStatus.WAITING if retryable else RunStatus.FAILED)
    step = result.steps[0]
    assert step.response is not None and step.response["status"] == status
    assert '"nope"' in step.response["body"]


def test_connection_refused_and_timeout_are_retryable(target: Target, http: httpx.Client) -> None:
    from tests.support import free_port

    flow = make_flow([http_step(url=f"http://127.0.0.1:{free_port()}/x")])
    assert run_flow(flow, make_event(), http=http).status is RunStatus.WAITING
    target.delay = 0.5
    flow = make_flow([http_step(url=f"{target.url}/slow", timeout="100ms")])
    result = run_flow(flow, make_event(), http=http)
    assert result.status is RunStatus.WAITING and "timed out" in (result.steps[0].error_message or "")


def test_retry_after_is_honoured(target: Target, http: httpx.Client) -> None:
    target.script["/x"] = [(429, b"")]
    flow = make_flow([http_step(url=f"{target.url}/x", retry={"max_attempts": 3, "initial": "1s"})])

    clock_now = 1000.0
    result = run_flow(flow, make_event(), http=http, clock=lambda: clock_now, rng=lambda: 0.0)
    assert result.next_attempt_at == clock_now  # jitter 0, no Retry-After header
    # now with the header
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(503)
            self.send_header("Retry-After", "30")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    flow = make_flow([http_step(url=f"http://127.0.0.1:{srv.server_address[1]}/x")])
    result = run_flow(flow, make_event(), http=http, clock=lambda: clock_now, rng=lambda: 0.0)
    srv.shutdown()
    srv.server_close()
    assert result.next_attempt_at == clock_now + 30


def test_backoff_is_full_jitter_within_bounds() -> None:
    policy = RetryPolicy(max_attempts=10, initial=2.0, max_delay=600.0)
    assert policy.delay(1, lambda: 1.0) == 2.0
    assert policy.delay(3, lambda: 1.0) == 8.0
    assert policy.delay(20, lambda: 1.0) == 600.0
    assert policy.delay(5, lambda: 0.0) == 0.0
    import random

    rng = random.Random(1)
    assert all(0 <= policy.delay(a, rng.random) <= min(600, 2 * 2 ** (a - 1)) for a in range(1, 12) for _ in range(50))


def test_retries_then_success_with_same_idempotency_key(target: Target, http: httpx.Client) -> None:
    target.script["/x"] = [(503, {}), (503, {}), (201, {"id": "ok"})]
    flow = make_flow([http_step(url=f"{target.url}/x", retry={"max_attempts": 5, "initial": "10ms"})])
    sleeps: list[float] = []
    result = run_to_end(flow, make_event(), http=http, sleep=sleeps.append, run=RunInfo(id=77, flow="test_flow"))
    assert result.status is RunStatus.SUCCEEDED
    assert [s.attempt for s in result.steps] == [1, 2, 3]
    keys = {r.headers["idempotency-key"] for r in target.requests("/x")}
    assert len(keys) == 1 and len(target.requests("/x")) == 3
    assert all(0 <= s <= 0.02 for s in sleeps)


def test_gives_up_after_max_attempts(target: Target, http: httpx.Client) -> None:
    target.script["/x"] = [(502, {})]
    flow = make_flow([http_step(url=f"{target.url}/x", retry={"max_attempts": 2, "initial": "1ms"})])
    result = run_to_end(flow, make_event(), http=http, sleep=lambda s: None)
    assert result.status is RunStatus.FAILED and "gave up after 2 attempts" in (result.error or "")


def test_host_from_event_data_is_refused_unless_allowed(target: Target, http: httpx.Client) -> None:
    flow = make_flow([http_step(url="{{ event.callback }}")])
    result = run_flow(flow, make_event(callback=f"{target.url}/x"), http=http)
    assert result.status is RunStatus.FAILED and "allow_hosts" in (result.error or "")
    assert target.requests() == []
    flow = make_flow([http_step(url="{{ event.callback }}", allow_hosts=["127.0.0.1"])])
    assert run_flow(flow, make_event(callback=f"{target.url}/x"), http=http).status is RunStatus.SUCCEEDED
    # a templated path under a fixed host is fine
    flow = make_flow([http_step(url=target.url + "/items/{{ event.id }}")])
    assert run_flow(flow, make_event(), http=http).status is RunStatus.SUCCEEDED


def test_link_local_is_always_refused(http: httpx.Client) -> None:
    flow = make_flow([http_step(url="http://169.254.169.254/latest/meta-data", allow_hosts=["*"])])
    result = run_flow(flow, make_event(), http=http)
    assert result.status is RunStatus.FAILED and "link-local" in (result.error or "")


def test_dry_run_sends_nothing_and_shows_requests(target: Target) -> None:
    flow = make_flow([http_step("a", url=f"{target.url}/a", json={"x": "{{ event.id }}"}),
                      http_step("b", url=f"{target.url}/b", json={"ref": "{{ steps.a.response.json.id }}"})])
    result = run_flow(flow, make_event(), dry_run=True)
    assert result.status is RunStatus.SUCCEEDED and target.requests() == []
    assert json.loads(result.steps[1].request["body"])["ref"] == "<response of a.json.id>"  # type: ignore[index]


def test_recorder_sees_side_effect_steps_start_before_they_run(target: Target, http: httpx.Client) -> None:
    rec = ListRecorder()
    flow = make_flow([{"id": "t", "transform": {"a": 1}}, http_step(url=f"{target.url}/x")])
    run_flow(flow, make_event(), http=http, recorder=rec)
    assert [e[0] for e in rec.events] == ["finished", "started", "finished"]


def test_env_base_url_with_templated_path_is_a_fixed_host(target: Target, http: httpx.Client) -> None:
    flow = make_flow([http_step(url="${BASE:-http://unused}/orders/{{ event.id }}")])
    result = run_flow(flow, make_event(), http=http, env={"BASE": target.url})
    assert result.status is RunStatus.SUCCEEDED, result.error
    assert target.requests("/orders/evt_1")


def test_credentials_in_urls_and_response_cookies_stay_out_of_records(target: Target, http: httpx.Client) -> None:
    target.script["/x"] = [(400, {"error": "no"})]
    base = target.url.replace("http://", "http://user:hunter2pass@")
    flow = make_flow([http_step(url="${CRM_URL}/x")])
    result = run_flow(flow, make_event(), http=http, env={"CRM_URL": base})
    assert result.status is RunStatus.FAILED
    assert "hunter2pass" not in json.dumps([vars(s) for s in result.steps], default=str) + (result.error or "")

    def cookie(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Set-Cookie": "session=abc123"}, json={})

    client = httpx.Client(transport=httpx.MockTransport(cookie))
    result = run_flow(make_flow([http_step(url="https://api.test/x")]), make_event(), http=client)
    assert "abc123" not in json.dumps([vars(s) for s in result.steps], default=str)


# --- the http step: requests that can never be sent fail at once --------------------------------------------


@pytest.mark.parametrize(("value", "kind"), [("tok_secret\n", "newline"), ("tok_secret\r\nX-Injected: 1", "carriage return"),
                                             ("tok\x00secret", "NUL"), ("tok\x1bsecret", "U+001B")])
def test_a_header_with_a_control_character_fails_at_once_without_its_value(
        target: Target, http: httpx.Client, value: str, kind: str) -> None:
    """It was a retryable connection error quoting the value: retried with backoff, the value in the run record."""
    flow = make_flow([http_step(url=f"{target.url}/x", headers={"X-Token": "{{ event.token }}"})])
    result = run_flow(flow, make_event(token=value), http=http)
    assert result.status is RunStatus.FAILED
    step = result.steps[0]
    assert step.error_type == "StepError"
    assert step.error_message == f"header 'X-Token' has a control character ({kind}); it cannot be sent"
    assert "secret" not in json.dumps([vars(s) for s in result.steps], default=str) + (result.error or "")
    assert target.requests() == []


def test_a_secret_header_with_a_trailing_newline_is_refused_without_leaking(target: Target, http: httpx.Client) -> None:
    """A token read from a file keeps its newline; h11's 'Illegal header value' message quoted it."""
    flow = make_flow([http_step(url=f"{target.url}/x", headers={"X-Api-Token": "${TOKEN}"})])
    result = run_flow(flow, make_event(), http=http, env={"TOKEN": "sk_live_9f8e7d\x00"})
    assert result.status is RunStatus.FAILED and "X-Api-Token" in (result.error or "")
    assert "9f8e7d" not in json.dumps([vars(s) for s in result.steps], default=str) + (result.error or "")
    assert target.requests() == []


def test_header_values_non_ascii_fail_and_edge_whitespace_is_dropped(target: Target, http: httpx.Client) -> None:
    flow = make_flow([http_step(url=f"{target.url}/x", headers={"X-Name": "{{ event.name }}"})])
    result = run_flow(flow, make_event(name="José"), http=http)  # crashed as an internal error
    assert result.status is RunStatus.FAILED and result.steps[0].error_type == "StepError"
    assert result.steps[0].error_message == "header 'X-Name' has a non-ASCII character; it cannot be sent"
    result = run_flow(flow, make_event(name=" \tpadded value "), http=http)  # h11 refused it, retryably
    assert result.status is RunStatus.SUCCEEDED, result.error
    assert target.requests("/x")[0].headers["x-name"] == "padded value"


def test_header_names_are_checked_at_load_and_when_a_template_makes_them(target: Target, http: httpx.Client) -> None:
    from engine.errors import FlowInvalid

    with pytest.raises(FlowInvalid, match="'X Foo' is not a valid HTTP header name"):
        make_flow([http_step(url=f"{target.url}/x", headers={"X Foo": "1"})])
    flow = make_flow([http_step(url=f"{target.url}/x", headers="{{ event.h }}")])
    result = run_flow(flow, make_event(h={"X Foo": "1"}), http=http)
    assert result.status is RunStatus.FAILED
    assert result.steps[0].error_message == "header name 'X Foo' is not a valid HTTP header name; it cannot be sent"
    for bad in (["X-A", "1"], "X-A: 1"):  # crashed as an internal error
        result = run_flow(flow, make_event(h=bad), http=http)
        assert result.status is RunStatus.FAILED and result.steps[0].error_type == "StepError"
        assert "headers must render to a mapping" in (result.error or "")
    assert target.requests() == []


@pytest.mark.parametrize("prefix", [" ", "\t", "\n"])
def test_a_url_with_leading_whitespace_fails_at_once(target: Target, http: httpx.Client, prefix: str) -> None:
    """urlsplit strips it and vetted the host; httpx saw no scheme and failed as a retryable connection error."""
    flow = make_flow([http_step(url="{{ event.url }}", allow_hosts=["127.0.0.1"])])
    result = run_flow(flow, make_event(url=f"{prefix}{target.url}/x"), http=http)
    assert result.status is RunStatus.FAILED and result.steps[0].error_type == "StepError"
    assert target.requests() == []


def test_a_host_with_a_label_over_63_characters_is_a_named_failure(http: httpx.Client) -> None:
    """Python's IDNA codec raised UnicodeError inside the check (and in httpx): an internal error."""
    host = "a" * 64 + ".test"
    result = run_flow(make_flow([http_step(url=f"http://{host}/x")]), make_event(), http=http)
    assert result.status is RunStatus.FAILED and result.steps[0].error_type == "StepError"
    assert "not a valid DNS name" in (result.error or "")


# --- the http step: link-local verdicts are cached per host -----------------------------------------------------


class Resolver:
    """A stand-in for socket.getaddrinfo (DNS is the one thing a test cannot serve): answers from a table, logs names."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.names: list[str] = []

    def __call__(self, host: str, port: Any, *args: Any, **kw: Any) -> list[tuple[Any, ...]]:
        import socket

        self.names.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        ip = self.answers[host]
        if ":" in ip:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, 0, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0))]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> tuple[Resolver, list[float]]:
    """A fresh verdict cache on a hand-moved clock, and a scripted resolver."""
    import socket

    from engine.steps import http as http_step_module

    now = [1000.0]
    resolver = Resolver({"api.example.test": "93.184.216.34", "meta.example.test": "169.254.169.254",
                         "mapped.example.test": "::ffff:169.254.169.254", "nat64.example.test": "64:ff9b::a9fe:a9fe",
                         "v6ll.example.test": "fe80::1", "xn--fa-hia.example.test": "169.254.169.254",
                         "fass.example.test": "93.184.216.34"})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.setattr(http_step_module, "_verdicts", http_step_module.HostVerdicts(clock=lambda: now[0]))
    return resolver, now


def _sending_client(sent: list[httpx.Request]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200, json={})))


def test_a_host_is_resolved_once_per_ttl(dns: tuple[Resolver, list[float]]) -> None:
    from engine.steps.http import HOST_VERDICT_TTL_S

    resolver, now = dns
    sent: list[httpx.Request] = []
    flow = make_flow([http_step(url="https://api.example.test/orders")])
    for _ in range(3):
        assert run_flow(flow, make_event(), http=_sending_client(sent)).status is RunStatus.SUCCEEDED
    assert resolver.names == ["api.example.test"] and len(sent) == 3
    now[0] += HOST_VERDICT_TTL_S - 0.01
    run_flow(flow, make_event(), http=_sending_client(sent))
    assert resolver.names == ["api.example.test"]
    now[0] += 0.02
    run_flow(flow, make_event(), http=_sending_client(sent))
    assert resolver.names == ["api.example.test"] * 2 and len(sent) == 5


@pytest.mark.parametrize("host", ["meta.example.test", "mapped.example.test", "nat64.example.test", "v6ll.example.test"])
def test_a_link_local_answer_is_refused_every_time(dns: tuple[Resolver, list[float]], host: str) -> None:
    from engine.steps.http import HOST_VERDICT_TTL_S

    resolver, now = dns
    sent: list[httpx.Request] = []
    flow = make_flow([http_step(url=f"http://{host}/latest/meta-data")])
    for _ in range(2):
        result = run_flow(flow, make_event(), http=_sending_client(sent))
        assert result.status is RunStatus.FAILED and "link-local" in (result.error or "")
    assert resolver.names == [host]
    now[0] += HOST_VERDICT_TTL_S
    assert run_flow(flow, make_event(), http=_sending_client(sent)).status is RunStatus.FAILED
    assert resolver.names == [host, host] and sent == []


def test_a_name_that_does_not_resolve_is_not_cached_and_stays_retryable(dns: tuple[Resolver, list[float]]) -> None:
    resolver, _ = dns

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)

    flow = make_flow([http_step(url="https://nxdomain.example.test/x")])
    client = httpx.Client(transport=httpx.MockTransport(unreachable))
    for _ in range(2):
        result = run_flow(flow, make_event(), http=client)
        assert result.status is RunStatus.WAITING and result.steps[0].error_type == "HttpStepError"
    assert resolver.names == ["nxdomain.example.test"] * 2
    # once it resolves, its new answer is judged at once
    resolver.answers["nxdomain.example.test"] = "169.254.169.254"
    assert "link-local" in (run_flow(flow, make_event(), http=client).error or "")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "http://[::1]/x", "http://169.254.169.254/x",
                                 "http://[::ffff:a9fe:a9fe]/x"])
def test_ip_literals_are_judged_without_dns(dns: tuple[Resolver, list[float]], url: str) -> None:
    resolver, _ = dns
    run_flow(make_flow([http_step(url=url)]), make_event(), http=_sending_client([]))
    assert resolver.names == []


def test_a_unicode_host_is_judged_by_the_name_httpx_connects_to(dns: tuple[Resolver, list[float]]) -> None:
    """getaddrinfo makes fass.* of faß.* (IDNA 2003); httpx connects to xn--fa-hia.* (IDNA 2008)."""
    resolver, _ = dns
    sent: list[httpx.Request] = []
    result = run_flow(make_flow([http_step(url="http://faß.example.test/x")]), make_event(), http=_sending_client(sent))
    assert result.status is RunStatus.FAILED and "link-local" in (result.error or "") and sent == []
    assert resolver.names == ["xn--fa-hia.example.test"]


def test_the_verdict_cache_is_bounded_and_thread_safe() -> None:
    import threading

    from engine.steps.http import HostVerdicts

    now = [0.0]
    cache = HostVerdicts(ttl=5.0, max_hosts=3, clock=lambda: now[0])
    decided: list[str] = []

    def decide(host: str) -> str | None:
        decided.append(host)
        return f"refused {host}" if host.startswith("bad") else None

    for host in ("a", "bad1", "c"):
        cache.verdict(host, decide)
    assert cache.verdict("bad1", decide) == "refused bad1" and len(decided) == 3
    cache.verdict("d", decide)  # full: the oldest ("a") goes
    assert len(cache) == 3
    cache.verdict("a", decide)
    assert decided[-1] == "a" and len(cache) == 3
    now[0] = 5.0  # all expired: they go first
    cache.verdict("e", decide)
    assert len(cache) == 1

    errors: list[BaseException] = []
    big = HostVerdicts(ttl=5.0, max_hosts=16)

    def hammer(seed: int) -> None:
        try:
            for i in range(300):
                host = f"{'bad' if i % 3 == 0 else 'ok'}{(seed * 7 + i) % 40}"
                assert big.verdict(host, decide) == (f"refused {host}" if host.startswith("bad") else None)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(big) <= 16


def test_a_store_that_fails_while_recording_a_start_stops_the_run_not_the_step() -> None:
    """A database blip at a call's start is no failure of the step (it was never sent): the worker stops,
    and the run resumes later from what was recorded."""
    from engine.errors import LeaseLost, StoreUnavailable

    calls: list[httpx.Request] = []
    client = httpx.Client(transport=httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200)))
    flow = make_flow([http_step("a", url="https://x.test/a")])
    for error in (StoreUnavailable("database unavailable: reset"), LeaseLost("run 1 was taken by another worker")):

        class Failing(ListRecorder):
            def step_started(self, step: Any, path: str, attempt: int, started_at: float, key: str,
                             _error: Exception = error) -> None:
                raise _error

        recorder = Failing()
        with pytest.raises(type(error)):
            run_flow(flow, make_event(), http=client, recorder=recorder)
        assert calls == [] and recorder.events == []
