"""ANY /sandbox/<name>/<path>: a built-in receiver so example flows run end to end with nothing else.

Records each request and answers 200 with a generated ``id``. ``X-Sandbox-Status: 503`` (or
``?sandbox_status=503``) makes it answer that status instead, for trying out retries.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, jsonify, request

from web.hooks import service

bp = Blueprint("sandbox", __name__)


@bp.route("/sandbox/<name>/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/sandbox/<name>/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def receive(name: str, path: str) -> Any:
    svc = service()
    body = request.get_data(cache=False)[: 256 * 1024].decode("utf-8", "replace")
    response_id = f"{name}_{secrets.token_hex(6)}"
    headers = [(k, "[redacted]" if k.lower() in svc.settings.redact_headers else v) for k, v in request.headers.items()]
    svc.store.sandbox_record(name, request.method, "/" + path + (f"?{request.query_string.decode()}"
                                                                  if request.query_string else ""),
                             headers, body, response_id)
    status = int(request.headers.get("X-Sandbox-Status") or request.args.get("sandbox_status") or 200)
    return jsonify({"id": response_id, "ok": status < 400, "sandbox": name, "path": "/" + path}), status
