"""One place that turns errors into responses: JSON ``{"ok": false, "error", "status"}`` for hooks,
API and ``.json`` paths, ``error.html`` for pages. Tracebacks go to the log, never to the client.

Domain errors (engine.errors) get their HTTP status here and nowhere else (STATUS), so views call the
service without re-checking its conditions first: a run pruned or a flow broken between a check and
the call is the same 404/409, never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from engine.errors import (
    BadBody,
    EngineError,
    FlowNotLoaded,
    NotRetryable,
    RunNotFound,
    StoreError,
    StoreUnavailable,
    VerificationError,
    VerificationUnavailable,
)

log = logging.getLogger("hookline.web")


STATUS: dict[type[EngineError], int] = {
    BadBody: 400,
    VerificationError: 401,
    RunNotFound: 404,
    FlowNotLoaded: 409,
    NotRetryable: 409,
    StoreError: 500,
    VerificationUnavailable: 503,
    StoreUnavailable: 503,
}


def status_of(exc: EngineError) -> int | None:
    """The status of the most specific mapped class of ``exc``; None for an error no request should meet."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return None


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

    @app.errorhandler(EngineError)
    def _engine(exc: EngineError) -> Any:
        status = status_of(exc)
        if status is None:
            return crashed(exc)
        if isinstance(exc, StoreError):  # database details stay in the log
            log.warning("%d: %s", status, exc)
            return error_response(status, "storage unavailable, try again shortly" if status == 503
                                  else "storage error; the details are in the server log")
        return error_response(status, str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        return error_response(exc.code or 500, exc.description or exc.name)

    app.errorhandler(Exception)(crashed)


def crashed(exc: Exception) -> Any:
    """A 500 for what no handler expected; the traceback goes to the log only."""
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal error; the details are in the server log")
