"""ANY /sandbox/<name>/<path>: a built-in receiver so example flows run end to end with nothing else.

Records each request and answers 200 with a generated ``id``. ``X-Sandbox-Status: 503`` (or
``?sandbox_status=503``) makes it answer that status instead, for trying out retries; anything but a
status from 200 to 599 is a 400. Bodies over ``MAX_BODY`` are refused (413) unread and unstored.

It is a test aid that anyone who can reach it can fill: production deployments set
``HOOKLINE_SANDBOX=0`` (``hookline serve`` and ``hookline web`` turn it off when listening beyond
localhost, unless it is set).
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, jsonify, request

from web.errors import ApiError
from web.hooks import service

bp = Blueprint("sandbox", __name__)

MAX_BODY = 256 * 1024


def _status() -> int:
    raw = request.headers.get("X-Sandbox-Status") or request.args.get("sandbox_status") or "200"
    if not (raw.isascii() and raw.strip().isdigit() and 200 <= int(raw) <= 599):
        raise ApiError(400, f"sandbox status must be a number from 200 to 599, got {raw[:20]!r}")
    return int(raw)


def _body() -> bytes:
    if (request.content_length or 0) > MAX_BODY:
        raise ApiError(413, f"the sandbox takes bodies up to {MAX_BODY} bytes")
    body = request.stream.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise ApiError(413, f"the sandbox takes bodies up to {MAX_BODY} bytes")
    return body


@bp.route("/sandbox/<name>/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/sandbox/<name>/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def receive(name: str, path: str) -> Any:
    svc = service()
    status = _status()
    body = _body().decode("utf-8", "replace")
    response_id = f"{name[:100]}_{secrets.token_hex(6)}"
    headers = [(k, "[redacted]" if k.lower() in svc.settings.redact_headers else v) for k, v in request.headers.items()]
    svc.store.sandbox_record(name[:200], request.method, ("/" + path + (f"?{request.query_string.decode()}"
                                                                         if request.query_string else ""))[:2000],
                             headers, body, response_id)
    return jsonify({"id": response_id, "ok": status < 400, "sandbox": name, "path": "/" + path}), status
