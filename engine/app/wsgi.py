"""WSGI entry point: ``gunicorn engine.app.wsgi:app``; settings are read once, here, and the runtime built from them."""

from engine.config import Settings, skip_unused_drivers

settings = Settings.from_env()
skip_unused_drivers(settings)

from engine.app.runtime import make_app  # noqa: E402 - after the drivers a SQLite deployment never loads are skipped

app = make_app(settings)
