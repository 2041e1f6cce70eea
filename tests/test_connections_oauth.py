"""OAuth2 connections against a real token endpoint on 127.0.0.1, with tokens shared through SQLite and PostgreSQL.

The runs go through Service (store, catalog, runner, http step) like a worker's; the runtime's clock
is moved forward instead of sleeping through a token's lifetime, so the tests do not depend on how
fast this machine is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.connection_store import StoreTokenCache
from engine.connections import Outbound
from engine.connections.load import load_connections
from engine.connections.runtime import ConnectionRuntime
from engine.model import RunStatus
from engine.store import RunStore
from engine.templating import RenderContext
from tests.faults.oracles import dump_database
from tests.oauth_server import CLIENT_ID, CONNECTIONS, AuthServer, leaks, start_auth_server
from tests.support import ROOT

FLOW = """
id: sync
steps:
  - id: push
    http:
      url: {api}/api/contacts
      connection: crm
      json: {{ref: "{{{{ event.id }}}}"}}
      retry: {{max_attempts: 4, initial: 50ms, max_delay: 100ms}}
"""


@pytest.fixture
def auth() -> Iterator[AuthServer]:
    server = start_auth_server()
    yield server
    server.stop()


def env_for(auth: AuthServer, **extra: str) -> dict[str, str]:
    return {"CRM_TOKEN_URL": f"{auth.url}/token", "CRM_CLIENT_ID": CLIENT_ID, "CRM_CLIENT_SECRET": auth.client_secret,
            **extra}


class Clock:
    """Real time plus an offset the test moves forward (a token's lifetime passes instantly)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def service(make_service: Any, db_url: str, auth: AuthServer, **env: str) -> tuple[Any, Any, Clock]:
    svc, queue = make_service({"sync": FLOW.format(api=auth.url), "connections": CONNECTIONS}, db_url,
                              env=env_for(auth, **env))
    clock = Clock()
    svc.options.connections.clock = clock
    return svc, queue, clock


def accept(svc: Any, ref: str) -> int:
    body = {"id": ref}
    flow = svc.catalog.get("sync")
    return int(svc.accept_event(flow, method="POST", query_string="", headers=[("Content-Type", "application/json")],
                                body=json.dumps(body).encode(), content_type="application/json", parsed=body).run_id)


def run(svc: Any, queue: Any, ref: str) -> Any:
    run_id = accept(svc, ref)
    queue.items.clear()
    svc.execute_run(run_id)
    return svc.store.get_run(run_id)


def stored_text(url: str) -> dict[str, str]:
    places: dict[str, str] = {}
    for table, column, text in dump_database(url):
        places[f"{table}.{column}"] = places.get(f"{table}.{column}", "") + text + "\n"
    return places


def test_fifty_concurrent_runs_after_expiry_make_one_token_request(make_service: Any, db_url: str,
                                                                  auth: AuthServer) -> None:
    svc, queue, clock = service(make_service, db_url, auth)
    assert run(svc, queue, "first").run.status is RunStatus.SUCCEEDED
    assert len(auth.token_requests) == 1
    first = auth.token_requests[0]
    assert (first.grant_type, first.auth, first.scope) == ("client_credentials", "basic", "contacts.write")

    clock.offset = 3600.0  # the token has expired
    auth.delay = 0.3  # the refresh stays open long enough for every run to be waiting on it
    ids = [accept(svc, f"e{i}") for i in range(50)]
    queue.items.clear()
    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(svc.execute_run, ids))
    errors = [s.error_message for i in ids for s in svc.store.get_run(i).steps if s.error_message]
    assert statuses == [RunStatus.SUCCEEDED] * 50, errors
    assert len(auth.token_requests) == 2
    later = [token for path, token, _, _ in auth.api_requests[1:]]
    assert len(later) == 50 and set(later) == {auth.issued[1]}

    # every value stays out of the database, in every encoding (the secrets fault test checks pages and logs)
    detail = svc.store.get_run(ids[0])
    assert detail.steps[0].request["connection"] == "crm"
    secrets = {"client secret": auth.client_secret, **{f"token {i}": t for i, t in enumerate(auth.issued)}}
    assert leaks(stored_text(db_url), secrets) == []


def prepare(runtime: ConnectionRuntime, name: str, env: dict[str, str], http: httpx.Client) -> str:
    request = Outbound("POST", "http://127.0.0.1/x", {}, {}, b"{}", "key")
    render = RenderContext({}, env)
    runtime.prepare(name, request, render, http)
    assert render.secrets[f"connection:{name}"] in request.headers["Authorization"]
    return request.headers["Authorization"].removeprefix("Bearer ")


def test_a_token_is_refreshed_shortly_before_it_expires(store: RunStore, auth: AuthServer, http: httpx.Client) -> None:
    conns = load_connections(CONNECTIONS)
    clock = Clock()
    runtime = ConnectionRuntime(conns.get, StoreTokenCache(store), owner="w1", clock=clock)
    env = env_for(auth)
    a = prepare(runtime, "crm", env, http)
    clock.offset = 3000.0
    assert prepare(runtime, "crm", env, http) == a and len(auth.token_requests) == 1
    # another worker (empty memo) reads the shared token instead of asking for one
    other = ConnectionRuntime(conns.get, StoreTokenCache(store), owner="w2", clock=clock)
    assert prepare(other, "crm", env, http) == a and len(auth.token_requests) == 1

    clock.offset = 3541.0  # within refresh_before (60 s) of the end of the 3600 s lifetime
    expires_at = StoreTokenCache(store).statuses()["crm"].expires_at
    assert expires_at is not None and clock() < expires_at  # still valid: this is before expiry, not after
    b = prepare(runtime, "crm", env, http)
    assert b != a and len(auth.token_requests) == 2
    assert prepare(other, "crm", env, http) == b and len(auth.token_requests) == 2


@pytest.mark.parametrize("style", ["basic", "body"])
def test_a_client_secret_with_reserved_characters_authenticates(store: RunStore, http: httpx.Client,
                                                                 style: str) -> None:
    """RFC 6749 2.3.1: basic auth carries the form-urlencoded id and secret, so ':' '%' '+' survive."""
    server = start_auth_server(client_secret="s3:cr%t+/ &=é")
    try:
        conns = load_connections(CONNECTIONS.replace("scopes: [contacts.write]",
                                                     f"scopes: [contacts.write]\n    auth_style: {style}"))
        runtime = ConnectionRuntime(conns.get, StoreTokenCache(store), owner="w1")
        token = prepare(runtime, "crm", env_for(server), http)
        assert token in server.valid and [r.auth for r in server.token_requests] == [style]
    finally:
        server.stop()


def test_a_401_refreshes_the_token_once_then_succeeds(make_service: Any, db_url: str, auth: AuthServer) -> None:
    svc, queue, _ = service(make_service, db_url, auth)
    assert run(svc, queue, "first").run.status is RunStatus.SUCCEEDED
    auth.revoke_all()  # the provider dropped the token before its expiry
    detail = run(svc, queue, "second")
    assert detail.run.status is RunStatus.SUCCEEDED
    assert [s.attempt for s in detail.steps] == [1]
    assert len(auth.token_requests) == 2
    assert [t for _, t, _, _ in auth.api_requests[1:]] == auth.issued  # refused with the old one, then the new

    # a target that refuses every token: one refresh, then the attempt fails (401 is not retryable)
    auth.api_script["/api/contacts"] = 401
    detail = run(svc, queue, "third")
    assert detail.run.status is RunStatus.FAILED
    assert len(auth.token_requests) == 3
    assert detail.steps[-1].error_message.endswith("answered 401 Unauthorized (not retryable)")


def test_a_rotated_refresh_token_is_persisted_encrypted_and_used_next(store: RunStore, auth: AuthServer,
                                                                       http: httpx.Client) -> None:
    auth.rotate = True
    issued = auth.issue_refresh_token()
    env = env_for(auth, HUB_REFRESH_TOKEN=issued)
    conns = load_connections(CONNECTIONS)
    clock = Clock()
    prepare(ConnectionRuntime(conns.get, StoreTokenCache(store), owner="w1", clock=clock), "hub", env, http)
    assert [(r.grant_type, r.auth, r.refresh_token) for r in auth.token_requests] == [("refresh_token", "body", issued)]
    assert issued not in auth.refresh_tokens  # the provider rotated it: only the newest one works now
    (rotated,) = auth.refresh_tokens

    clock.offset = 4000.0
    # a fresh process (nothing in memory) takes the newest refresh token from the store, not the environment's
    prepare(ConnectionRuntime(conns.get, StoreTokenCache(store), owner="w2", clock=clock), "hub", env, http)
    assert auth.token_requests[1].refresh_token == rotated
    (newest,) = auth.refresh_tokens
    secrets = {"rotated": rotated, "newest": newest, "client secret": auth.client_secret,
               **{f"token {i}": t for i, t in enumerate(auth.issued)}}
    assert leaks(stored_text(store.url), secrets) == []

    # an operator who sets a new refresh token in the environment is obeyed over the stored one
    replaced = auth.issue_refresh_token()
    clock.offset = 8000.0
    prepare(ConnectionRuntime(conns.get, StoreTokenCache(store), owner="w3", clock=clock), "hub",
            {**env, "HUB_REFRESH_TOKEN": replaced}, http)
    assert auth.token_requests[2].refresh_token == replaced


WORKER = textwrap.dedent("""
    import json, sys, threading, time
    import httpx
    from engine.connection_store import StoreTokenCache
    from engine.connections.load import load_connections
    from engine.connections.runtime import ConnectionRuntime
    from engine.connections import Outbound
    from engine.store import RunStore
    from engine.templating import RenderContext

    url, env, owner, seconds, text = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
    store = RunStore(url)
    runtime = ConnectionRuntime(load_connections(text).get, StoreTokenCache(store), owner=owner)

    def prepare(runtime, name, env, http):
        request = Outbound("POST", "http://127.0.0.1/x", {}, {}, b"{}", "key")
        runtime.prepare(name, request, RenderContext({}, env), http)
        return request.headers["Authorization"]
    seen = set()
    print("ready", flush=True)
    sys.stdin.readline()  # both processes start together
    until = time.time() + seconds
    with httpx.Client(timeout=10) as http:
        def loop():
            while time.time() < until:
                seen.add(prepare(runtime, "crm", env, http))
                time.sleep(0.01)
        threads = [threading.Thread(target=loop) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
    print(len(seen))
""")


def test_two_worker_processes_never_refresh_concurrently(store: RunStore, auth: AuthServer) -> None:
    auth.expires_in = 0.6  # refreshed every ~0.3 s (refresh_before is capped at half the lifetime)
    auth.delay = 0.1  # each token request is held open: concurrent ones would overlap at the server
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, store.url, json.dumps(env_for(auth)), f"w{i}", "2.5",
                              CONNECTIONS],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n", p.communicate(timeout=60)
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert all(int(out) >= 2 for out, _ in outs), outs  # both processes went through several tokens
    requests = sorted(auth.token_requests, key=lambda r: r.started)
    assert len(requests) >= 3
    overlaps = [(a, b) for a, b in zip(requests, requests[1:], strict=False) if b.started < a.ended]
    assert overlaps == []


def test_a_token_endpoint_outage_retries_the_step_with_its_backoff(make_service: Any, db_url: str,
                                                                  auth: AuthServer) -> None:
    svc, queue, _ = service(make_service, db_url, auth)
    auth.failures = [(503, {"error": "temporarily_unavailable"}), (503, {"error": "temporarily_unavailable"})]
    run_id = accept(svc, "o1")
    svc.execute_run(queue.pop()[0])
    detail = svc.store.get_run(run_id)
    assert detail.run.status is RunStatus.WAITING
    assert detail.steps[0].error_message == "connection crm: token endpoint answered 503 temporarily_unavailable"
    (_, delay), = queue.items
    assert 0 <= delay <= 0.05 + 0.05  # the step's own backoff (initial 50ms, full jitter)
    for _ in range(5):
        if not queue.items:
            break
        rid, delay = queue.pop()
        time.sleep(delay)
        svc.execute_run(rid)
    detail = svc.store.get_run(run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert [s.attempt for s in detail.steps] == [1, 2, 3] and len(auth.token_requests) == 3
    assert not auth.api_requests[:-1]  # the target was only called once a token came


def test_a_refused_client_fails_at_once_with_a_clear_message(make_service: Any, db_url: str,
                                                            auth: AuthServer) -> None:
    svc, queue, _ = service(make_service, db_url, auth, CRM_CLIENT_SECRET="wrong-secret")
    detail = run(svc, queue, "o1")
    assert detail.run.status is RunStatus.FAILED
    assert [s.error_message for s in detail.steps] == ["connection crm: token endpoint answered 401 invalid_client"]
    assert queue.items == [] and auth.api_requests == []
    status = svc.options.connections.statuses()["crm"]
    assert status.error == "connection crm: token endpoint answered 401 invalid_client" and status.access_token is None


def test_token_endpoint_down_is_a_retryable_step_error(tmp_path: Path, http: httpx.Client) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    env = {"CRM_TOKEN_URL": f"http://127.0.0.1:{port}/token", "CRM_CLIENT_ID": "c", "CRM_CLIENT_SECRET": "s"}
    runtime = ConnectionRuntime(load_connections(CONNECTIONS).get)
    from engine.connections import ConnectionFailed

    with pytest.raises(ConnectionFailed) as info:
        prepare(runtime, "crm", env, http)
    assert str(info.value) == "connection crm: token endpoint unreachable (ConnectError)" and info.value.retryable


def test_a_worker_that_dies_mid_refresh_loses_its_lease_and_another_refreshes(store: RunStore, auth: AuthServer,
                                                                              http: httpx.Client) -> None:
    from engine.connections.runtime import derive_key

    clock = Clock()
    cache = StoreTokenCache(store)
    now = clock()
    assert cache.lease("crm", derive_key(auth.client_secret, "crm"), "dead-worker", now, now + 15) is not None
    assert cache.lease("crm", b"k" * 32, "other", now, now + 15) is None  # held: nobody else gets it

    waited: list[float] = []

    def sleep(seconds: float) -> None:  # waiting moves the runtime's clock on, not the test's
        waited.append(seconds)
        clock.offset += seconds

    runtime = ConnectionRuntime(load_connections(CONNECTIONS).get, cache, owner="w2", clock=clock, sleep=sleep)
    prepare(runtime, "crm", env_for(auth), http)
    assert len(auth.token_requests) == 1  # once the dead worker's lease ran out, and not before
    refreshed_at = cache.statuses()["crm"].refreshed_at
    assert refreshed_at is not None and refreshed_at >= now + 15 and sum(waited) < 16


def test_runs_waiting_on_a_failed_refresh_fail_with_it_instead_of_asking_again(store: RunStore, auth: AuthServer,
                                                                                http: httpx.Client) -> None:
    import threading

    from engine.connections import ConnectionFailed

    auth.failures = [(503, {"error": "temporarily_unavailable"})] * 20
    auth.delay = 0.5
    runtime = ConnectionRuntime(load_connections(CONNECTIONS).get, StoreTokenCache(store), owner="w1")
    barrier = threading.Barrier(10)
    errors: list[str] = []

    def one() -> None:
        barrier.wait()
        try:
            prepare(runtime, "crm", env_for(auth), http)
        except ConnectionFailed as exc:
            errors.append(f"{exc} retryable={exc.retryable}")

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == ["connection crm: token endpoint answered 503 temporarily_unavailable retryable=True"] * 10
    assert len(auth.token_requests) == 1


def test_a_link_local_token_endpoint_is_refused_for_good(tmp_path: Path) -> None:
    from engine.config import Settings
    from engine.connections import ConnectionFailed
    from engine.service import make_http_client

    env = {"CRM_TOKEN_URL": "http://169.254.169.254/token", "CRM_CLIENT_ID": "c", "CRM_CLIENT_SECRET": "s"}
    runtime = ConnectionRuntime(load_connections(CONNECTIONS).get)
    with make_http_client(Settings()) as client, pytest.raises(ConnectionFailed) as info:
        prepare(runtime, "crm", env, client)
    assert str(info.value).startswith("connection crm: token endpoint refused: ") and not info.value.retryable
    assert "link-local" in str(info.value)


def test_a_token_cache_that_cannot_be_reached_is_a_retryable_step_error(tmp_path: Path, auth: AuthServer,
                                                                       http: httpx.Client) -> None:
    from engine.connections import ConnectionFailed

    store = RunStore(f"sqlite:///{tmp_path}/missing/dir/hookline.db")  # cannot be opened
    runtime = ConnectionRuntime(load_connections(CONNECTIONS).get, StoreTokenCache(store))
    with pytest.raises(ConnectionFailed) as info:
        prepare(runtime, "crm", env_for(auth), http)
    store.dispose()
    assert str(info.value).startswith("connection crm: token cache unavailable: ") and info.value.retryable
    assert auth.token_requests == []
