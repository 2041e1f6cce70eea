"""WSGI entry point: ``gunicorn web.wsgi:app``."""

from engine.config import Settings, skip_unused_drivers

skip_unused_drivers(Settings.from_env())

from web import create_app  # noqa: E402 - after the drivers a SQLite deployment never loads are skipped

app = create_app()
