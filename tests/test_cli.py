"""The hookline command end to end, as a subprocess: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, Target

FLOW = """
id: demo
steps:
  - id: shape
    transform: {{who: "{{{{ event.name | upper }}}}"}}
  - id: call
    http:
      url: {url}/hello
      json: {{who: "{{{{ steps.shape.who }}}}"}}
"""


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "engine.app.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def no_traceback(out: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr


@pytest.fixture
def flows(tmp_path: Path, target: Target) -> Path:
    d = tmp_path / "flows"
    d.mkdir()
    (d / "demo.yaml").write_text(FLOW.format(url=target.url))
    return d


def test_validate_good_and_bad(flows: Path, tmp_path: Path) -> None:
    out = cli("validate", str(flows))
    assert out.returncode == 0 and "demo" in out.stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "b.yaml").write_text("steps:\n  - id: a\n    http: {url: '{{ x'}\n  - id: a\n    nope: 1\n")
    (bad / "c.yaml").write_text("steps: [\n")
    out = cli("validate", str(bad))
    no_traceback(out)
    assert out.returncode == 1
    lines = [line for line in out.stdout.splitlines() if line]
    assert any(line.startswith(f"{bad}/b.yaml:3: steps[0].http.url: Jinja syntax error") for line in lines), lines
    assert any(line.startswith(f"{bad}/b.yaml:4: steps[1].id: duplicate step id") for line in lines), lines
    assert any(line.startswith(f"{bad}/c.yaml:2: YAML syntax error") for line in lines), lines


def test_validate_names_missing_env_vars(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("steps:\n  - id: a\n    http: {url: '${NEEDED_URL}/x'}\n")
    out = cli("validate", str(tmp_path), env={"NEEDED_URL": ""})
    assert out.returncode == 0 and "warning:" in out.stdout and "NEEDED_URL" in out.stdout
    out = cli("validate", "--strict", str(tmp_path), env={"NEEDED_URL": ""})
    assert out.returncode == 1 and "NEEDED_URL" in out.stdout and "flow s" in out.stdout


def test_run_prints_steps_and_calls_the_target(flows: Path, tmp_path: Path, target: Target) -> None:
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"name": "ada"}))
    out = cli("run", "demo", "--event", str(event), "--flows", str(flows))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "call" in out.stdout and "run succeeded" in out.stdout
    assert target.requests("/hello")[0].json() == {"who": "ADA"}


def test_dry_run_sends_nothing(flows: Path, tmp_path: Path, target: Target) -> None:
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"name": "ada"}))
    out = cli("run", "demo", "--event", str(event), "--flows", str(flows), "--dry-run")
    assert out.returncode == 0 and f"would send: POST {target.url}/hello" in out.stdout
    assert '"who": "ADA"' in out.stdout and target.requests() == []


@pytest.mark.parametrize(("content", "message"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not a UTF-8 text file"),
    (b"{not: [valid", "not valid JSON or YAML"),
])
def test_bad_event_files_give_one_line(flows: Path, tmp_path: Path, content: bytes, message: str) -> None:
    event = tmp_path / "e.bin"
    event.write_bytes(content)
    out = cli("run", "demo", "--event", str(event), "--flows", str(flows))
    no_traceback(out)
    assert out.returncode != 0 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_template_error_at_run_time_is_one_line(flows: Path, tmp_path: Path) -> None:
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"nom": "no name key"}))
    out = cli("run", "demo", "--event", str(event), "--flows", str(flows))
    no_traceback(out)
    assert out.returncode == 1 and "demo.yaml:5: steps[0].transform.who" in out.stdout and "name" in out.stdout


def test_unknown_flow(flows: Path, tmp_path: Path) -> None:
    out = cli("run", "nope", "--event", "x.json", "--flows", str(flows))
    no_traceback(out)
    assert out.returncode == 1 and "no flow 'nope'" in out.stderr


def test_flow_tests_pass_for_the_examples() -> None:
    out = cli("test", "flows")
    no_traceback(out)
    assert out.returncode == 0, out.stdout
    assert " 0 failed" in out.stdout.splitlines()[-1]


def test_db_upgrade_on_sqlite_and_postgres(tmp_path: Path, pg_url: str) -> None:
    for url in (f"sqlite:///{tmp_path}/x.db", pg_url):
        out = cli("db", "upgrade", env={"HOOKLINE_DATABASE_URL": url})
        assert out.returncode == 0, out.stderr
        assert "up to date" in out.stdout
    out = cli("db", "upgrade", env={"HOOKLINE_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"})
    no_traceback(out)
    assert out.returncode == 1 and out.stderr.startswith("error: database upgrade failed")


def test_send_signs_with_the_flows_secret(tmp_path: Path, make_service: Any, sqlite_url: str) -> None:
    from werkzeug.serving import make_server

    from web import create_app

    flow = ("id: signed\ntrigger:\n  verify: {provider: github, secret: '${GH_SECRET}'}\n"
            "steps:\n  - id: t\n    transform: {x: $.x}\n")
    svc, _ = make_service({"signed": flow}, sqlite_url, env={"GH_SECRET": "gh-s3cret"})
    server = make_server("127.0.0.1", 0, create_app(svc.settings, service=svc), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        event = tmp_path / "e.json"
        event.write_text('{"x": 1}')
        env = {"GH_SECRET": "gh-s3cret", "HOOKLINE_FLOWS_DIR": svc.settings.flows_dir}
        out = cli("send", "signed", "--event", str(event), "--url", f"http://127.0.0.1:{server.port}", env=env)
        assert out.returncode == 0 and out.stdout.startswith("202"), out.stdout + out.stderr
        out = cli("send", "signed", "--event", str(event), "--url", f"http://127.0.0.1:{server.port}",
                  env={**env, "GH_SECRET": "wrong"})
        assert out.returncode == 1 and out.stdout.startswith("401")
    finally:
        server.shutdown()


def test_fixture_turns_a_run_into_a_passing_flow_test(tmp_path: Path, make_service: Any, sqlite_url: str,
                                                       target: Target) -> None:
    svc, queue = make_service({"demo": FLOW.format(url=target.url)}, sqlite_url)
    body = {"name": "ada"}
    run_id = svc.accept_event(svc.catalog.get("demo"), method="POST", query_string="", headers=[],
                              body=json.dumps(body).encode(), content_type="application/json", parsed=body).run_id
    svc.execute_run(queue.pop()[0])
    env = {"HOOKLINE_DATABASE_URL": sqlite_url, "HOOKLINE_FLOWS_DIR": svc.settings.flows_dir}
    out = cli("fixture", str(run_id), env=env)
    assert out.returncode == 0, out.stderr
    written = Path(svc.settings.flows_dir) / "tests" / "demo" / f"run-{run_id}.yaml"
    assert written.is_file() and "stubs:" in written.read_text()
    seen = len(target.requests())
    out = cli("test", svc.settings.flows_dir)
    assert out.returncode == 0 and "1 passed, 0 failed" in out.stdout, out.stdout
    assert len(target.requests()) == seen  # stubs, no network
    assert cli("fixture", "999", env=env).returncode == 1
