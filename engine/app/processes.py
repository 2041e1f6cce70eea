"""The long-running commands: ``hookline serve`` (web and worker in one process), ``web`` (gunicorn) and
``worker`` (the Huey consumer and its reaper)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from engine.app.console import check_service_settings, fail, load_settings, runtime_or_exit, safe_url, setup_logging
from engine.config import Settings

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def listening_env(host: str, port: int = 0) -> dict[str, str]:
    """Defaults for a process serving on ``host:port`` (unless set): the address it serves on is a trusted Host
    and the flows' ``${HOOKLINE_URL}`` (a wildcard address reached on loopback), and the sandbox receiver,
    a test aid anyone could fill, is off beyond loopback. Port 0 (not bound yet) sets no HOOKLINE_URL."""
    out: dict[str, str] = {}
    if "HOOKLINE_URL" not in os.environ and port:
        near = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        out["HOOKLINE_URL"] = f"http://{f'[{near}]' if ':' in near else near}:{port}"
    if "HOOKLINE_TRUSTED_HOSTS" not in os.environ and host not in ("0.0.0.0", "::", ""):
        out["HOOKLINE_TRUSTED_HOSTS"] = ",".join(dict.fromkeys(("localhost", "127.0.0.1", "::1", host)))
    if "HOOKLINE_SANDBOX" not in os.environ and host not in LOOPBACK:
        out["HOOKLINE_SANDBOX"] = "0"
    return out


def _run_consumer(settings: Settings, workers: int, health_port: int | None = None, runtime: Any = None) -> None:
    """The worker threads and the reaper on ``runtime`` (built here from ``settings`` when not given)."""
    from engine.config import skip_unused_drivers

    skip_unused_drivers(settings)
    from engine.app import tasks
    from engine.app.reaper import Reaper
    from engine.app.runtime import build_runtime

    runtime = runtime or runtime_or_exit(build_runtime, settings)
    reaper = Reaper(runtime.service, settings.reaper_interval_s, tasks.store_breaker)
    reaper.start()
    health = None
    if health_port is not None:
        from engine.app.worker_health import HealthServer

        health = HealthServer("127.0.0.1", health_port, worker_checks)
        health.start()
        click.echo(f"worker health on http://127.0.0.1:{health.port}/readyz")
    consumer = runtime.huey.create_consumer(workers=workers, worker_type="thread", periodic=True,
                                          initial_delay=0.02, backoff=1.2, max_delay=0.5, check_worker_health=True)
    try:
        consumer.run()
    finally:
        reaper.stopped.set()
        if health is not None:
            health.stop()


def worker_checks() -> dict[str, str]:
    """The worker's readiness: its store breaker and its queue reads (engine.app.worker_health)."""
    from engine.app import tasks

    return {"database": tasks.store_breaker.status(), "queue": tasks.queue_outage.status()}


@click.command()
@click.option("--flows", "flows_dir", default=None, help="Flows directory (HOOKLINE_FLOWS_DIR).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=None, type=int, help="Worker threads (HOOKLINE_WORKER_THREADS).")
@click.option("--threads", default=8, show_default=True, type=int, help="Web threads (requests handled at once).")
@click.option("--connections", default=200, show_default=True, type=int, help="Connections held open at once.")
@click.option("--request-timeout", default=15.0, show_default=True, type=float,
              help="Seconds a request may take to arrive, headers and body (slow clients are cut off).")
@click.option("--idle-timeout", default=30.0, show_default=True, type=float,
              help="Seconds an idle keep-alive connection is kept.")
def serve(flows_dir: str | None, host: str, port: int, workers: int | None, threads: int, connections: int,
          request_timeout: float, idle_timeout: float) -> None:
    """Web server and worker in one process: the embedded set-up (SQLite + Huey on SQLite).

    The web side runs on waitress (engine.app.serving): requests reach the app only once complete, within
    --request-timeout, on a bounded thread pool.
    """
    settings = load_settings(env={**os.environ, **listening_env(host, port)}, flows_dir=flows_dir)
    setup_logging(settings)
    if host not in LOOPBACK and not settings.admin_password:
        fail("refusing to listen beyond localhost without HOOKLINE_ADMIN_PASSWORD (the UI would be open)")
    from engine.migrate import upgrade

    upgrade(settings.database_url)
    from engine.config import skip_unused_drivers

    skip_unused_drivers(settings)
    import threading

    from engine.app.runtime import build_runtime
    from engine.app.serving import DeadlineServer
    from web import create_app

    runtime = runtime_or_exit(build_runtime, settings)
    app = create_app(settings, service=runtime.service)
    server = DeadlineServer(app, host=host, port=port, threads=threads, connection_limit=connections,
                            request_timeout=request_timeout, idle_timeout=idle_timeout,
                            max_body=max(settings.max_body, 64 * 1024 * 1024))
    threading.Thread(target=server.run, name="hookline-web", daemon=True).start()
    click.echo(f"Hookline serving {settings.flows_dir} on http://{host}:{server.port} "
               f"(database {safe_url(settings.database_url)})")
    try:
        _run_consumer(settings, workers or settings.worker_threads, runtime=runtime)
    finally:
        server.stop()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="Gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, type=int, help="Threads per gunicorn worker.")
def web(host: str, port: int, workers: int, threads: int) -> None:
    """The web app (ingress + UI) under gunicorn; run `hookline worker` next to it."""
    env = {**os.environ, **listening_env(host, port)}  # handed to gunicorn, whose workers read their settings
    settings = load_settings(env=env)
    check_service_settings(settings)  # here, in one line, rather than as each gunicorn worker's traceback
    if host not in LOOPBACK and not settings.admin_password and not settings.api_token:
        click.echo("warning: listening beyond localhost without HOOKLINE_ADMIN_PASSWORD", err=True)
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        import tempfile

        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="hookline-metrics-")
    args = [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers),
            "--config", "python:engine.app.gunicorn_conf",
            "--threads", str(threads), "--worker-class", "gthread" if threads > 1 else "sync",
            # %(U)s: the path without its query string, which may carry a verification token
            "--access-logfile", "-", "--access-logformat", '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss',
            "--graceful-timeout", "10", "engine.app.wsgi:app"]
    os.execve(sys.executable, args, env)


@click.command()
@click.option("--workers", default=None, type=int, help="Worker threads (HOOKLINE_WORKER_THREADS).")
@click.option("--health-port", default=None, type=int,
              help="Serve /healthz, /readyz (503 while the store or queue is out) and /metrics on 127.0.0.1:PORT.")
def worker(workers: int | None, health_port: int | None) -> None:
    """A Huey consumer executing runs, plus the reaper that recovers runs of dead workers."""
    settings = load_settings()
    setup_logging(settings)
    _run_consumer(settings, workers or settings.worker_threads, health_port)
