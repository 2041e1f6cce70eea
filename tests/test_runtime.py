"""Configuration from one place: build_runtime(settings) is the process's composition root,
RunOptions.from_settings the one mapping of settings onto what steps see, and HOOKLINE_DESTINATIONS is
checked with the fields of a flow's ``http.limits`` at start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huey.storage import RedisStorage

from engine.app import tasks
from engine.app.runtime import build_runtime, make_app
from engine.catalog import FlowCatalog
from engine.config import Settings
from engine.destinations import parse_destinations
from engine.errors import SettingsError
from engine.service import Service
from engine.steps import RunOptions
from engine.store import RunStore
from tests.support import Target

ROOT = Path(__file__).resolve().parent.parent


def test_destinations_are_checked_with_the_http_limit_fields() -> None:
    assert parse_destinations("") == {}
    assert parse_destinations('{"CRM.example.com": {"rate": "10/s", "concurrency": 5, "breaker_cooldown": "1m"}}') == {
        "crm.example.com": {"rate": "10/s", "concurrency": 5, "breaker_cooldown": 60.0}}
    for text, message in [
        ('{"crm.example.com": {"concurency": 5}}',
         "HOOKLINE_DESTINATIONS: crm.example.com.concurency: unknown key 'concurency'; expected one of: rate, burst, "
         "concurrency, breaker_failures, breaker_cooldown"),
        ('{"crm": {"rate": "fast"}}', "HOOKLINE_DESTINATIONS: crm.rate: expected a rate like 10/s or 600/m, got 'fast'"),
        ('{"crm": {"burst": 0}}', "HOOKLINE_DESTINATIONS: crm.burst: expected a positive whole number"),
        ('{"crm": {"breaker_cooldown": "soon"}}', "HOOKLINE_DESTINATIONS: crm.breaker_cooldown: expected a duration"),
        ('["crm"]', 'HOOKLINE_DESTINATIONS: expected {"https://api.example.com": {"rate": "10/s", "concurrency": 5}, '
                    '...}'),
        ("{crm", "HOOKLINE_DESTINATIONS: not JSON"),
    ]:
        with pytest.raises(SettingsError) as caught:
            parse_destinations(text)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_service_with_a_mistyped_destination_does_not_start(tmp_path: Path, settings: Settings) -> None:
    bad = Settings(database_url=settings.database_url, flows_dir=settings.flows_dir,
                   destinations='{"crm.example.com": {"concurency": 5}}')
    with pytest.raises(SettingsError, match="concurency"):
        Service(bad, RunStore(bad.database_url), FlowCatalog(bad.flows_dir))


def test_the_worker_refuses_a_mistyped_destination_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HOOKLINE_DATABASE_URL": f"sqlite:///{tmp_path}/h.db", "HOOKLINE_FLOWS_DIR": str(tmp_path),
           "HOOKLINE_DESTINATIONS": '{"crm.example.com": {"rate": "5/s", "concurency": 2}}'}
    out = subprocess.run([sys.executable, "-m", "engine.app.cli", "worker"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == ("error: HOOKLINE_DESTINATIONS: crm.example.com.concurency: unknown key 'concurency'; "
                                  "expected one of: rate, burst, concurrency, breaker_failures, breaker_cooldown")


def test_run_options_come_from_settings_in_the_service_and_the_cli(tmp_path: Path, target: Target) -> None:
    settings = Settings(user_agent="Acme-Hooks/2", max_stored_body=2048, allow_hosts=("a.example",),
                        redact_headers=("X-Secret",), public_url="https://hooks.example.com/", http_timeout_s=3.0)
    options = RunOptions.from_settings(settings)
    assert (options.user_agent, options.max_recorded_body, options.allow_hosts, options.redact_headers,
            options.public_url, options.default_timeout) == ("Acme-Hooks/2", 2048, ("a.example",), ("x-secret",),
                                                              "https://hooks.example.com", 3.0)
    svc = Service(Settings(database_url=f"sqlite:///{tmp_path}/h.db", flows_dir=str(tmp_path), user_agent="Acme-Hooks/2"),
                  RunStore(f"sqlite:///{tmp_path}/h.db"), FlowCatalog(tmp_path))
    assert svc.options.user_agent == "Acme-Hooks/2" and svc.options.connections is not None

    # `hookline run` used to build its own RunOptions and sent Hookline's default User-Agent
    (tmp_path / "ua.yaml").write_text(f"steps:\n  - id: call\n    http: {{url: '{target.url}/ua', json: {{}}}}\n")
    (tmp_path / "e.json").write_text(json.dumps({}))
    out = subprocess.run([sys.executable, "-m", "engine.app.cli", "run", "ua", "--event", str(tmp_path / "e.json"),
                          "--flows", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HOOKLINE_USER_AGENT": "Acme-Hooks/2"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert target.requests("/ua")[0].headers["user-agent"] == "Acme-Hooks/2"


def test_make_app_takes_the_queue_from_the_settings_it_is_given(tmp_path: Path, redis_url: str) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "hello.yaml").write_text("steps:\n  - id: t\n    transform: {a: 1}\n")
    db = f"sqlite:///{tmp_path}/h.db"
    RunStore(db).create_all()
    app = make_app(Settings(database_url=db, flows_dir=str(flows), huey_path=str(tmp_path / "q.db")))
    assert tasks.huey.storage.filename == str(tmp_path / "q.db")  # not the environment's queue
    resp = app.test_client().post("/hooks/hello", json={"n": 1})
    assert resp.status_code == 202 and tasks.huey.pending_count() == 1

    runtime = build_runtime(Settings(database_url=db, flows_dir=str(flows), redis_url=redis_url))
    assert isinstance(runtime.huey.storage, RedisStorage) and tasks.huey is runtime.huey
    assert tasks.service() is runtime.service and runtime.service.pending is not None
    runtime.service.accept_event(runtime.catalog.flows()[0], method="POST", query_string="", headers=[],
                                 body=b"{}", content_type="application/json", parsed={})
    assert runtime.huey.pending_count() == 1
    runtime.huey.flush()


def test_a_message_queued_before_engine_app_is_still_executed(tmp_path: Path) -> None:
    """Processes before the move to engine/app queued ``engine.tasks.execute_run``: a worker upgraded
    while such messages wait (or beside a web process not yet upgraded) executes them."""
    from huey import Huey
    from huey.storage import SqliteStorage

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "hello.yaml").write_text("steps:\n  - id: t\n    transform: {a: 1}\n")
    db = f"sqlite:///{tmp_path}/h.db"
    RunStore(db).create_all()
    runtime = build_runtime(Settings(database_url=db, flows_dir=str(flows), huey_path=str(tmp_path / "q.db")))
    run_id = runtime.service.accept_event(runtime.catalog.flows()[0], method="POST", query_string="", headers=[],
                                          body=b"{}", content_type="application/json", parsed={}).run_id
    runtime.huey.flush()  # its message as this version queued it; below, as an old process did

    old = Huey("hookline", storage_class=SqliteStorage, filename=str(tmp_path / "q.db"), results=False)

    def execute_run(run_id: int) -> None:
        raise AssertionError("the old process's code")

    execute_run.__module__ = "engine.tasks"
    old.task(retries=0)(execute_run)(run_id)  # what an old web process enqueued
    task = runtime.huey.dequeue()
    assert task is not None and task.name == "execute_run"
    runtime.huey.execute(task)
    assert runtime.store.get_run_record(run_id).status.value == "succeeded"  # type: ignore[union-attr]
    runtime.service.accept_event(runtime.catalog.flows()[0], method="POST", query_string="", headers=[],
                                 body=b"{}", content_type="application/json", parsed={})
    assert old.dequeue() is not None, "what this version enqueues, a worker not yet upgraded executes"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("HOOKLINE_ALERT_FORMAT", "teams", "error: HOOKLINE_ALERT_FORMAT: expected json or slack, got 'teams'"),
    ("HOOKLINE_DESTINATIONS", '{"crm.example.com": {"concurency": 2}}',
     "error: HOOKLINE_DESTINATIONS: crm.example.com.concurency: unknown key 'concurency'; "
     "expected one of: rate, burst, concurrency, breaker_failures, breaker_cooldown"),
])
def test_hookline_web_refuses_a_bad_service_setting_in_one_line(tmp_path: Path, name: str, value: str,
                                                                message: str) -> None:
    """Not a gunicorn worker's traceback: the settings only the service reads are checked before gunicorn starts."""
    env = {**os.environ, "HOOKLINE_DATABASE_URL": f"sqlite:///{tmp_path}/h.db", "HOOKLINE_FLOWS_DIR": str(tmp_path),
           "HOOKLINE_ALERT_URL": "https://alerts.example.com/", name: value}
    out = subprocess.run([sys.executable, "-m", "engine.app.cli", "web", "--port", "0", "--workers", "1"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr.strip()) == (1, message)
