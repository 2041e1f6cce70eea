"""One place that turns errors into responses: JSON ``{"ok": false, "error", "status"}`` for hooks,
API and ``.json`` paths, ``error.html`` for pages. Tracebacks go to the log, never to the client."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from engine.errors import StoreUnavailable

log = logging.getLogger("hookline.web")


class ApiError(Exception):
    """Raised by views: a status and the one-line message the client reads."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def wants_json() -> bool:
    path = request.path
    return (path.startswith(("/hooks/", "/api/", "/sandbox/")) or path.endswith(".json")
            or request.accept_mimetypes.best == "application/json")


def error_response(status: int, message: str, **extra: Any) -> Response | tuple[Any, int]:
    if wants_json():
        resp = jsonify({"ok": False, "error": message, "status": status, **extra})
        resp.status_code = status
        return resp
    return render_template("error.html", status=status, message=message), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> Any:
        return error_response(exc.status, exc.message, **exc.extra)

    @app.errorhandler(StoreUnavailable)
    def _store(exc: StoreUnavailable) -> Any:
        log.warning("503: %s", exc)
        return error_response(503, "storage unavailable, try again shortly")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error; the details are in the server log")
