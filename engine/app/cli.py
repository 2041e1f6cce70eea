"""The ``hookline`` command and its flow tools (validate, run, test, send, fixture, prune, db); serve, web and
worker are in engine.app.processes. Each command parses its arguments and calls the engine; errors are one line."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from engine.app.console import fail, load_settings, safe_url
from engine.app.processes import serve, web, worker
from engine.catalog import flow_files
from engine.config import environ
from engine.connections.load import check_flow, connections_file
from engine.errors import EngineError, FlowInvalid
from engine.loader import id_line, load_flow_file, missing_env_vars
from engine.model import Event, Flow, Headers, RunStatus

log = logging.getLogger("hookline")


def _find_flow(name: str, flows_dir: str) -> Flow:
    path = Path(name)
    if not path.is_file():
        candidates = [p for p in flow_files(flows_dir) if p.stem == name]
        for p in flow_files(flows_dir):
            if not candidates:
                try:
                    if load_flow_file(p).id == name:
                        candidates = [p]
                except FlowInvalid:
                    pass
        if not candidates:
            fail(f"no flow {name!r} (neither a file nor a flow id in {flows_dir})")
        path = candidates[0]
    try:
        return load_flow_file(path)
    except FlowInvalid as exc:
        for err in exc.errors:
            click.echo(str(err), err=True)
        sys.exit(1)


def _read_event(path: str) -> Any:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        fail(f"{path}: cannot read: {exc.strerror}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"{path}: not a UTF-8 text file (expected a JSON or YAML event)")
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        fail(f"{path}{where}: not valid JSON or YAML: {getattr(exc, 'problem', exc)}")


@click.group()
@click.version_option("0.1.0", prog_name="hookline")
def main() -> None:
    """Hookline: webhooks in, YAML flows, reliable outbound calls."""


for _command in (serve, web, worker):  # engine.app.processes: the long-running ones
    main.add_command(_command)


@main.command()
@click.argument("paths", nargs=-1)
@click.option("--strict", is_flag=True, help="Also fail on ${VAR}s that are unset here (a deploy-time check).")
def validate(paths: tuple[str, ...], strict: bool) -> None:
    """Check flow files (default: the flows directory); print every problem as file:line: path: message.

    Unset ``${VAR}``s are warnings: the file is fine, this environment lacks a secret. ``--strict``
    makes them problems, for the machine that will serve the flows.
    """
    settings = load_settings()
    files: list[Path] = []
    for p in paths or (settings.flows_dir,):
        found = flow_files(p)
        if not found and not Path(p).exists():
            fail(f"{p}: no such file or directory")
        files.extend(found)
    files = list({f.resolve(): f for f in files}.values())  # a file named twice is one file
    problems = 0
    seen: dict[tuple[Path, str], str] = {}  # (directory, id) -> "file:line": a catalog serves one directory
    env = environ()
    connections = _validate_connections(paths or (settings.flows_dir,), env, strict)
    problems += sum(n for _, n in connections.values())
    for f in files:
        try:
            flow = load_flow_file(f)
        except FlowInvalid as exc:
            for err in exc.errors:
                click.echo(str(err))
            problems += len(exc.errors)
            continue
        unknown = check_flow(flow, connections[connections_file(f)][0])
        for err in unknown:
            click.echo(str(err))
        problems += len(unknown)
        claim = (f.parent.resolve(), flow.id)
        if claim in seen:  # the catalog refuses the second file; name both, at their ids' lines
            click.echo(f"{f}:{id_line(flow)}: id: flow id {flow.id!r} is also the id of {seen[claim]}; "
                       "each flow file needs its own id")
            problems += 1
            continue
        seen[claim] = f"{f}:{id_line(flow)}"
        if unknown:
            continue
        missing = missing_env_vars(flow, env)
        label = "" if strict else "warning: "
        for name in missing:
            click.echo(f"{label}{f}: flow {flow.id}: environment variable {name} is not set and has no default")
        if strict:
            problems += len(missing)
        if not missing or not strict:
            click.echo(f"{f}: ok ({flow.id}, {len(flow.steps)} steps)")
    if problems:
        click.echo(f"{problems} problem(s) in {len(files)} file(s)", err=True)
        sys.exit(1)


def _validate_connections(paths: tuple[str, ...], env: Any, strict: bool) -> dict[Path, tuple[Any, int]]:
    """Load each directory's connections.yaml once, printing its problems; file -> (ConnectionSet, problems)."""
    from engine.connections.load import load_connections_file

    out: dict[Path, tuple[Any, int]] = {}
    for p in paths:
        path = connections_file(p)
        if path in out:
            continue
        found = load_connections_file(path)
        for err in found.errors:
            click.echo(str(err))
        warnings = found.env_warnings(env)
        for line in warnings:
            click.echo(("" if strict else "warning: ") + line)
        if found.file and not found.errors:
            click.echo(f"{found.file}: ok ({len(found.connections)} connections)")
        out[path] = (found, len(found.errors) + (len(warnings) if strict else 0))
    return out


def _print_result(result: Any, dry_run: bool) -> None:
    for s in result.steps:
        line = f"{s.path:<20} {s.status:<10} attempt {s.attempt}"
        if s.duration_ms is not None:
            line += f"  {s.duration_ms:.1f} ms"
        click.echo(line)
        if s.request and (dry_run or s.status.value == "failed"):
            click.echo(f"  {'would send' if dry_run else 'sent'}: {s.request['method']} {s.request['url']}")
            if s.request.get("body"):
                click.echo(f"  body: {s.request['body']}")
        if s.error_message:
            click.echo(f"  error: {s.error_message}")
        elif s.output is not None and not dry_run:
            click.echo("  output: " + json.dumps(s.output, default=str)[:2000])
    click.echo(f"run {result.status}" + (f": {result.error}" if result.error else ""))


@main.command()
@click.argument("flow")
@click.option("--event", "event_file", required=True, help="JSON or YAML file with the webhook body.")
@click.option("--header", "headers", multiple=True, help="K=V request header (repeatable).")
@click.option("--dry-run", is_flag=True, help="Send nothing; print the requests that would be sent.")
@click.option("--flows", "flows_dir", default=None, help="Flows directory.")
def run(flow: str, event_file: str, headers: tuple[str, ...], dry_run: bool, flows_dir: str | None) -> None:
    """Run a flow in-process on an event file and print each step."""
    from engine.runner import run_to_end
    from engine.service import make_http_client
    from engine.steps import RunOptions

    settings = load_settings(flows_dir=flows_dir)
    f = _find_flow(flow, settings.flows_dir)
    body = _read_event(event_file)
    pairs = []
    for h in headers:
        if "=" not in h:
            fail(f"--header {h!r}: expected K=V")
        k, v = h.split("=", 1)
        pairs.append((k.strip(), v.strip()))
    event = Event(body=body, headers=Headers(pairs), raw=json.dumps(body, default=str).encode())
    from engine.catalog import FlowCatalog
    from engine.connections.runtime import ConnectionRuntime

    # connections.yaml beside the flows; tokens cached in this process only (nothing is stored)
    connections = ConnectionRuntime(FlowCatalog(settings.flows_dir).connection, secret_key=settings.secret_key)
    options = RunOptions.from_settings(settings, connections=connections)

    def waiting(r: Any) -> None:
        click.echo(f"  retrying in {max(0.0, r.next_attempt_at - time.time()):.1f}s: {r.error}")

    with make_http_client(settings) as client:
        result = run_to_end(f, event, http=None if dry_run else client, env=environ(), dry_run=dry_run,
                            options=options, on_wait=waiting)
    _print_result(result, dry_run)
    sys.exit(0 if result.status in (RunStatus.SUCCEEDED, RunStatus.FILTERED) else 1)


@main.command("test")
@click.argument("path", required=False)
def test_cmd(path: str | None) -> None:
    """Run flow fixtures (flows/tests/<flow>/*.yaml) with no network; report pass/fail per fixture."""
    from engine.flowtest import fixture_files, run_fixture

    settings = load_settings()
    root = path or settings.flows_dir
    files = flow_files(root)
    flows_dir = Path(root) if Path(root).is_dir() else Path(root).parent
    passed = failed = 0
    for f in files:
        try:
            flow = load_flow_file(f)
        except FlowInvalid as exc:
            for err in exc.errors:
                click.echo(f"FAIL {err}")
            failed += 1
            continue
        fixtures = fixture_files(flows_dir, flow.id)
        if not fixtures:
            click.echo(f"---- {flow.id}: no fixtures in {flows_dir / 'tests' / flow.id}")
        for fx in fixtures:
            res = run_fixture(flow, fx)
            if res.passed:
                passed += 1
                click.echo(f"PASS {flow.id} :: {res.name}")
            else:
                failed += 1
                click.echo(f"FAIL {flow.id} :: {res.name} ({fx})")
                for problem in res.problems:
                    click.echo(f"     {problem}")
    click.echo(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)


@main.command()
@click.argument("flow")
@click.option("--event", "event_file", required=True, help="JSON file with the webhook body.")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Hookline's base URL.")
@click.option("--header", "headers", multiple=True, help="Extra K=V header (repeatable).")
@click.option("--flows", "flows_dir", default=None, help="Where the flow's file is (default HOOKLINE_FLOWS_DIR).")
def send(flow: str, event_file: str, url: str, headers: tuple[str, ...], flows_dir: str | None) -> None:
    """POST an event to a running Hookline, signed with the flow's configured secret."""
    import httpx

    from engine.presets import sign

    settings = load_settings()
    f = _find_flow(flow, flows_dir or settings.flows_dir)
    body = json.dumps(_read_event(event_file)).encode()
    hdrs = {"Content-Type": "application/json"}
    for h in headers:
        k, _, v = h.partition("=")
        hdrs[k.strip()] = v.strip()
    if f.trigger.verify is not None:
        try:
            hdrs.update(sign(f.trigger.verify, body, env=environ(), now=time.time(),
                             url=f"{url.rstrip('/')}/hooks/{f.id}", content_type=hdrs["Content-Type"]))
        except (EngineError, ValueError) as exc:
            fail(f"cannot sign for flow {f.id}: {exc}")
    try:
        resp = httpx.post(f"{url.rstrip('/')}/hooks/{f.id}", content=body, headers=hdrs, timeout=10)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {exc}")
    click.echo(f"{resp.status_code} {resp.text.strip()}")
    sys.exit(0 if resp.status_code < 300 else 1)


@main.command()
@click.argument("run_id", type=int)
@click.option("--out", default=None, help="File to write (default flows/tests/<flow>/run-<id>.yaml; - for stdout).")
def fixture(run_id: int, out: str | None) -> None:
    """Turn a stored run into a flow test fixture: its event, each http response as a stub, its statuses."""
    from engine.flowtest import export_fixture, placeholder_env
    from engine.loader import load_flow
    from engine.store import RunStore

    settings = load_settings()
    store = RunStore(settings.database_url)
    detail = store.get_run(run_id)
    if detail is None:
        fail(f"no run {run_id} in {safe_url(settings.database_url)}")
    assert detail is not None
    stored = store.flow_source(detail.run.flow_version)
    flow = load_flow(stored[1], stored[2]) if stored else None
    env = placeholder_env(flow) if flow else {}
    text = export_fixture(detail, detail.run.flow_id, env=env, trigger=flow.trigger if flow else None)
    if out == "-":
        click.echo(text, nl=False)
        return
    path = Path(out) if out else Path(settings.flows_dir) / "tests" / detail.run.flow_id / f"run-{run_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    click.echo(f"wrote {path}; run it with: hookline test")


@main.command()
@click.option("--vacuum", is_flag=True, help="SQLite: also run a full VACUUM (converts old files to auto-vacuum).")
def prune(vacuum: bool) -> None:
    """Delete runs past retention (HOOKLINE_RETENTION_SUCCEEDED/_FAILED days) and reclaim disk space."""
    from engine.catalog import FlowCatalog
    from engine.service import Service
    from engine.store import RunStore

    settings = load_settings()
    svc = Service(settings, RunStore(settings.database_url), FlowCatalog(settings.flows_dir))
    total = svc.prune(progress=lambda n: click.echo(f"\rpruned {n} runs", nl=False))
    if vacuum:
        svc.store.reclaim_space(full=True)
    click.echo(f"\rpruned {total} runs (succeeded older than {settings.retention_succeeded:g} days, "
               f"failed older than {settings.retention_failed:g} days)")


@main.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations to HOOKLINE_DATABASE_URL."""
    from engine.migrate import upgrade

    settings = load_settings()
    try:
        upgrade(settings.database_url)
    except Exception as exc:  # noqa: BLE001 - one line for the operator, details in the log
        log.debug("upgrade failed", exc_info=True)
        fail(f"database upgrade failed: {str(exc).splitlines()[0]}")
    click.echo(f"database at {safe_url(settings.database_url)} is up to date")


if __name__ == "__main__":
    main()
