"""POST /hooks/<flow_id>: verify, store, enqueue, answer 202 (or say exactly why not)."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from werkzeug.exceptions import ClientDisconnected

from engine import envrefs, metrics
from engine.catalog import BrokenFlow
from engine.errors import MissingEnvError, StoreError, VerificationError, VerificationUnavailable
from engine.events import BadBody, parse_body
from engine.model import Flow
from engine.presets import Request, form_rule, verify_request
from engine.service import Service
from web.errors import ApiError

bp = Blueprint("hooks", __name__)
log = logging.getLogger("hookline.ingress")


def service() -> Service:
    svc: Service = current_app.extensions["hookline"]
    return svc


def reject(flow_id: str, status: int, reason: str, message: str) -> ApiError:
    """Count a refused webhook by reason and build the error the provider reads."""
    metrics.REJECTED.labels(flow_id, reason).inc()
    return ApiError(status, message)


def _flow(flow_id: str) -> Flow:
    flow = service().catalog.get(flow_id)
    if flow is None:
        raise reject("unknown", 404, "unknown_flow", f"no flow with id {flow_id!r}")
    if isinstance(flow, BrokenFlow):
        raise reject(flow_id, 503, "invalid_flow", f"flow {flow_id!r} has errors and is not served: {flow.errors[0]}")
    return flow


def _read_body(flow_id: str, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise reject(flow_id, 413, "too_large", f"body of {request.content_length} bytes exceeds the {limit}-byte limit")
    body = _read_all(request.stream, limit + 1)
    if len(body) > limit:
        raise reject(flow_id, 413, "too_large", f"body exceeds the {limit}-byte limit")
    declared = request.content_length
    if declared is not None and len(body) < declared:
        # the client closed early (or a server handed over a partial body): never a run on half an event
        raise reject(flow_id, 400, "truncated", f"body ended after {len(body)} of its {declared} declared bytes")
    return body


def _read_all(stream: Any, size: int) -> bytes:
    """Up to ``size`` bytes: one read() may return less than is coming (gunicorn, Werkzeug), so read until EOF."""
    chunks: list[bytes] = []
    got = 0
    try:
        while got < size:
            chunk = stream.read(size - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except ClientDisconnected:  # Werkzeug's stream: the connection closed before Content-Length bytes
        pass
    return b"".join(chunks)


@bp.route("/hooks/<flow_id>", methods=["GET"])
def handshake(flow_id: str) -> Any:
    """``hub.challenge`` echo (Meta, WebSub) after checking ``hub.verify_token``; starts no run."""
    flow = _flow(flow_id)
    challenge = request.args.get("hub.challenge")
    if challenge is None:
        raise ApiError(405, "webhooks are delivered with POST or PUT")
    expected = flow.trigger.verify_token
    if expected is None:
        raise ApiError(403, "this flow has no trigger.verify_token for hub.challenge handshakes")
    try:
        token = envrefs.expand(expected, service().env)
    except MissingEnvError as exc:
        raise ApiError(503, f"verify token not configured: {exc}") from None
    if not hmac.compare_digest(request.args.get("hub.verify_token", "").encode(), token.encode()):
        raise ApiError(403, "hub.verify_token does not match")
    return Response(challenge, mimetype="text/plain")


@bp.route("/hooks/<flow_id>", methods=["POST", "PUT"])
def receive(flow_id: str) -> Any:
    svc = service()
    flow = _flow(flow_id)
    metrics.WEBHOOKS.labels(flow_id).inc()
    limit = flow.trigger.max_body or svc.settings.max_body
    body = _read_body(flow_id, limit)
    headers = list(request.headers.items())
    content_type = request.headers.get("Content-Type", "")
    if flow.trigger.verify is not None:
        try:
            received = Request.build(method=request.method, url=request.url, headers=dict(headers), body=body)
            verify_request(flow.trigger.verify, received, env=svc.env, now=time.time())
        except VerificationError as exc:
            log.warning("rejected webhook for %s: %s", flow_id, exc)
            raise reject(flow_id, 401, "unverified", f"verification failed: {exc}") from None
        except VerificationUnavailable as exc:
            log.error("cannot verify webhooks for %s: %s", flow_id, exc)
            raise reject(flow_id, 503, "secret_missing", str(exc)) from None
    try:
        parsed = parse_body(body, content_type, form_rule=form_rule(flow.trigger.verify))
    except BadBody as exc:
        raise reject(flow_id, 400, "bad_body", str(exc)) from None
    if isinstance(parsed, dict) and parsed.get("type") == "url_verification" and "challenge" in parsed:
        return jsonify({"challenge": parsed["challenge"]})  # Slack's URL handshake: no run
    guard = current_app.extensions.get("hookline_sqlite_guard")
    try:
        if guard is not None:
            guard.check()  # never acknowledge into a SQLite file that was deleted or replaced (I1)
        accepted = svc.accept_event(flow, method=request.method, query_string=request.query_string.decode("latin-1"),
                                    headers=headers, body=body, content_type=content_type, parsed=parsed)
    except StoreError as exc:  # every database error leaves the store as one (a deleted SQLite file too)
        log.error("could not store webhook for %s: %s", flow_id, exc)
        raise reject(flow_id, 503, "unavailable", "could not store the event; retry later") from None
    run_url = url_for("ui.run_detail", run_id=accepted.run_id) if "ui.run_detail" in current_app.view_functions \
        else None
    if accepted.duplicate:
        metrics.DUPLICATES.labels(flow_id).inc()
        log.info("duplicate webhook for %s -> run %s", flow_id, accepted.run_id,
                 extra={"run_id": accepted.run_id, "flow": flow_id})
        return jsonify({"ok": True, "run_id": accepted.run_id, "duplicate": True, "run_url": run_url}), 200
    log.info("accepted webhook for %s -> run %s", flow_id, accepted.run_id,
             extra={"run_id": accepted.run_id, "flow": flow_id})
    return jsonify({"ok": True, "run_id": accepted.run_id, "status": "queued", "run_url": run_url}), 202
