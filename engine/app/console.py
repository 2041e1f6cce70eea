"""What the ``hookline`` commands share: settings read once (a bad one is one line), logging, the runtime,
and the one-line failure every command ends with instead of a traceback."""

from __future__ import annotations

import sys
from typing import Any

import click

from engine.config import Settings


def setup_logging(settings: Settings) -> None:
    from engine.logs import configure

    configure(settings.log_format)


def load_settings(**overrides: Any) -> Settings:
    from engine.errors import SettingsError

    try:
        return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        fail(str(exc))
        raise  # not reached: fail exits


def runtime_or_exit(build: Any, settings: Settings) -> Any:
    """build_runtime(settings), a setting that does not parse being one line (SettingsError names it)."""
    from engine.errors import SettingsError

    try:
        return build(settings)
    except SettingsError as exc:
        fail(str(exc))
        raise  # not reached: fail exits


def check_service_settings(settings: Settings) -> None:
    """The settings only the Service reads (HOOKLINE_DESTINATIONS, HOOKLINE_ALERT_*), for a process that
    builds its Service elsewhere (gunicorn's workers): a bad one is one line and exit 1."""
    from engine.alerts import check_settings
    from engine.destinations import parse_destinations
    from engine.errors import SettingsError

    try:
        parse_destinations(settings.destinations)
        check_settings(settings)
    except SettingsError as exc:
        fail(str(exc))


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
