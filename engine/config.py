"""Settings: defaults in code, ``HOOKLINE_*`` environment variables on top, each field documented.

Built once per process (web factory, Huey module, CLI) and passed down; nothing
else reads ``os.environ`` except :func:`environ`, which hands flows their ``${VAR}`` values.
"""

from __future__ import annotations

import os
import sys
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from engine.errors import SettingsError
from engine.units import parse_duration, parse_size


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    database_url: str = _f("sqlite:///hookline.db", "SQLAlchemy URL of the run store (SQLite in WAL mode, or postgresql+psycopg://).")
    redis_url: str = _f("", "When set, Huey runs on Redis (scale-out); otherwise on a SQLite file next to the database.")
    huey_path: str = _f("", "SQLite file for the embedded Huey queue; default: <database file>-queue.db.")
    flows_dir: str = _f("flows", "Directory of flow YAML files, reloaded when they change.")
    max_body: int = _f(5 * 1024 * 1024, "Largest webhook body accepted, in bytes (413 above); a flow may lower or raise it.")
    http_timeout_s: float = _f(10.0, "Default timeout of outbound http steps, in seconds.")
    lease_s: float = _f(60.0, "How long a worker owns a run without renewing it; after that another worker takes it over.")
    reaper_interval_s: float = _f(5.0, "How often workers look for runs whose lease expired or that were never enqueued.")
    queued_grace_s: float = _f(10.0, "A run still queued this long after it was accepted is enqueued again by the reaper.")
    worker_threads: int = _f(4, "Huey worker threads per worker process.")
    sandbox: bool = _f(True, "Serve the built-in sandbox receiver at /sandbox/<name>/<path>; turn it off in production "
                             "(hookline serve/web turn it off when listening beyond localhost, unless set).")
    redact_headers: tuple[str, ...] = _f(
        ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token"),
        "Header names whose values are replaced by [redacted] before anything is stored.",
    )
    allow_hosts: tuple[str, ...] = _f((), "Hosts outbound http steps may reach when the host comes from event data.")
    breaker_failures: int = _f(5, "Consecutive failures (connection, timeout, 5xx) that open an origin's circuit "
                                  "(scheme://host:port); 0: off.")
    breaker_cooldown_s: float = _f(30.0, "Seconds an origin's circuit stays open before one probe request.")
    destinations: str = _f("", 'JSON limits per origin, e.g. {"https://crm.example.com:8443": {"rate": "10/s", '
                               '"concurrency": 5}}, or per bare host (every origin on it; an origin\'s entry wins): the '
                               "keys of an http step's `limits`, checked at start-up (a typo is an error).")
    max_stored_body: int = _f(256 * 1024, "Largest step input/output or response body stored per step, in bytes.")
    retention_succeeded: float = _f(14.0, "Days succeeded and filtered runs are kept.")
    retention_failed: float = _f(90.0, "Days failed runs are kept.")
    user_agent: str = _f("Hookline/0.1", "User-Agent of outbound requests.")
    public_url: str = _f("", "Where operators reach the UI (https://hookline.example.com): makes run links absolute "
                             "(on_failure's error.run_url, alerts' run_url).")
    url: str = _f("", "This Hookline's own base URL as flows read it, ${HOOKLINE_URL} (the examples call their sandbox "
                      "there): hookline serve and web set it to the address they listen on; elsewhere (a worker on "
                      "its own, hookline run) it is http://127.0.0.1:8000 unless set.")
    alert_url: str = _f("", "Where a run that fails for good is announced (a POST, once per run); empty: no alerts. "
                            "See operations.md, Alerts.")
    alert_format: str = _f("json", "'json' (flow, run_id, run_url, step, error, failed_at, suppressed) or 'slack' "
                                   '({"text": ...} for Slack-compatible incoming webhooks).')
    alert_connection: str = _f("", "A connection of connections.yaml that signs (standard-webhooks, hmac_signature) "
                                   "or authenticates alert requests.")
    alert_interval_s: float = _f(600.0, "At most one alert per flow per interval (600, 10m, 1h); the next alert "
                                        "counts the failures not alerted in between.")
    secret_key: str = _f("", "Flask session signing key; generated per process when empty.")
    admin_password: str = _f("", "When set, the UI and API require login with this password.")
    api_token: str = _f("", "Bearer token accepted by the JSON API.")
    trusted_hosts: tuple[str, ...] = _f(
        (), "Host header values the UI and API answer when no admin password is set (wildcards allowed); "
            "default: localhost, 127.0.0.1, ::1 and the address served on.")
    session_idle_s: float = _f(8 * 3600.0, "A login session unused this long is ended (and logout ends it at once).")
    log_format: str = _f("text", "'text' for humans, 'json' for one JSON object per line.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, prefix: str = "HOOKLINE_", **overrides: Any) -> Settings:
        """Defaults, then ``HOOKLINE_<FIELD>`` variables, then explicit overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(prefix + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _coerce(f.name, f.default, raw)
        values.update(overrides)
        return cls(**values)

    @property
    def queue_path(self) -> str:
        if self.huey_path:
            return self.huey_path
        if self.database_url.startswith("sqlite:///") and self.database_url != "sqlite:///:memory:":
            return self.database_url[len("sqlite:///") :] + "-queue.db"
        return "hookline-queue.db"


def _coerce(name: str, default: Any, raw: str) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() not in ("0", "false", "no", "off", "")
        if isinstance(default, int):
            return parse_size(raw) if name.startswith("max_") else int(raw)  # sizes: 5MiB, 256KiB (engine.units)
        if isinstance(default, float):
            return parse_duration(raw) if name.endswith("_s") else float(raw)  # durations: 10s, 500ms, 1m
        if isinstance(default, tuple):
            return tuple(p.strip().lower() if name == "redact_headers" else p.strip() for p in raw.split(",") if p.strip())
    except ValueError as exc:
        raise SettingsError(f"HOOKLINE_{name.upper()}: cannot read {raw!r} ({exc})") from None
    return raw


def skip_unused_drivers(settings: Settings) -> None:
    """Keep redis-py and psycopg out of a process whose settings use neither (~15 MB per process).

    huey.storage imports both whenever they are installed. Only for server entry points (gunicorn
    workers, `hookline worker`/`serve`), before huey is imported; never in a process that may later
    open another database (tests, the CLI's other commands).
    """
    unused = {"redis": not settings.redis_url, "psycopg": settings.database_url.startswith("sqlite")}
    for module, skip in unused.items():
        if skip and module not in sys.modules:
            sys.modules[module] = None  # type: ignore[assignment]  # `import` now raises ImportError


def environ(settings: Settings | None = None) -> Mapping[str, str]:
    """The process environment, the only source of ``${VAR}`` values in flows, with ``settings.url`` as the
    built-in ``${HOOKLINE_URL}`` (engine.envrefs) when the settings say where this process serves."""
    if settings is None or not settings.url:
        return os.environ
    return ChainMap({"HOOKLINE_URL": settings.url}, os.environ)


def settings_help() -> list[tuple[str, Any, str]]:
    """(env var, default, help) for every setting; docs are generated from this."""
    return [("HOOKLINE_" + f.name.upper(), f.default, f.metadata["help"]) for f in fields(Settings)]
