"""The Flask adapter: ingress (/hooks), sandbox receiver, health checks and the operator UI."""

from __future__ import annotations

import secrets

from flask import Flask, Response, current_app, request
from werkzeug.routing import IntegerConverter

from engine.config import Settings
from engine.service import Service


class RowId(IntegerConverter):
    """``<int:...>`` in every route: an id a database column can hold (2^63 - 1 at most); larger ones are a 404,
    not an overflow inside the query (a 500)."""

    def __init__(self, url_map: object, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(url_map, *args, **kwargs)  # type: ignore[arg-type]


def create_app(settings: Settings | None, *, service: Service) -> Flask:
    """Build the app on ``service`` (engine.app.runtime.make_app builds both from one Settings: web never
    builds a queue itself). ``settings`` defaults to the service's."""
    settings = settings or service.settings
    app = Flask(__name__)
    app.url_map.converters["int"] = RowId  # before any route is added
    app.config.update(
        SECRET_KEY=settings.secret_key or secrets.token_hex(32),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # Flask 3 reads this, not JSON_SORT_KEYS
    app.extensions["hookline"] = service
    from engine.sqlite_guard import SqliteGuard

    app.extensions["hookline_sqlite_guard"] = SqliteGuard.for_url(service.settings.database_url)

    from web import auth, health, hooks, metrics, sandbox, schemas, ui
    from web.errors import register_error_handlers

    app.register_blueprint(hooks.bp)
    app.register_blueprint(schemas.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    if settings.sandbox:
        app.register_blueprint(sandbox.bp)
    auth.init_app(app)  # login, CSRF, security headers; Secure session cookie over HTTPS
    ui.init_app(app)  # pages, their .json twins and /api
    register_error_handlers(app)
    app.after_request(_allow_header)
    return app


def _allow_header(response: Response) -> Response:
    """Every 405 names the methods the path does take (RFC 9110 15.5.6), whoever raised it."""
    if response.status_code == 405 and "Allow" not in response.headers:
        try:
            methods = current_app.url_map.bind_to_environ(request.environ).allowed_methods(request.path)
        except Exception:  # noqa: BLE001 - no header rather than a failed error response
            methods = []
        if methods:
            response.headers["Allow"] = ", ".join(sorted(methods))
    return response
