"""A real OAuth2 authorization server and protected API on 127.0.0.1, for the connection tests.

``POST /token`` implements the client credentials and refresh token grants (RFC 6749 4.4 and 6),
with client authentication by HTTP basic or form body, optional refresh token rotation (the old
one is then invalid_grant), scripted failures, and a delay that holds each token request open so
concurrent callers really overlap. ``/api/...`` answers 401 unless the bearer token is one this
server issued and has not revoked. Every token request is recorded with when it started and
ended, as the server saw it, so tests judge overlap without trusting the client's clock.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus

CLIENT_ID = "hookline-client"

CONNECTIONS = """
connections:
  crm:
    type: oauth2_client_credentials
    token_url: ${CRM_TOKEN_URL}
    client_id: ${CRM_CLIENT_ID}
    client_secret: ${CRM_CLIENT_SECRET}
    scopes: [contacts.write]
  hub:
    type: oauth2_refresh_token
    token_url: ${CRM_TOKEN_URL}
    client_id: ${CRM_CLIENT_ID}
    client_secret: ${CRM_CLIENT_SECRET}
    refresh_token: ${HUB_REFRESH_TOKEN}
    auth_style: body
"""
"""connections.yaml with one client-credentials (``crm``) and one refresh-token (``hub``) connection to this server."""


@dataclass
class TokenRequest:
    grant_type: str
    auth: str  # "basic" | "body"
    scope: str | None
    audience: str | None
    refresh_token: str | None
    started: float
    ended: float = 0.0


@dataclass
class AuthServer:
    server: ThreadingHTTPServer
    client_secret: str
    expires_in: float | None = 3600
    delay: float = 0.0  # seconds each token request is held
    rotate: bool = False
    failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # answered first, in order
    token_requests: list[TokenRequest] = field(default_factory=list)
    api_requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)  # path, token, ...
    issued: list[str] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    refresh_tokens: set[str] = field(default_factory=set)  # the ones that work now
    issued_refresh: list[str] = field(default_factory=list)  # every one ever issued
    api_script: dict[str, int] = field(default_factory=dict)  # path -> status to answer regardless of token
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def issue_refresh_token(self) -> str:
        token = f"rt-{secrets.token_urlsafe(12)}"
        with self.lock:
            self.refresh_tokens.add(token)
            self.issued_refresh.append(token)
        return token

    def revoke_all(self) -> None:
        with self.lock:
            self.valid.clear()

    def stop(self) -> None:
        """Stop serving and close the listening socket (shutdown alone leaves it open: a ResourceWarning)."""
        self.server.shutdown()
        self.server.server_close()

    # --- the grant -------------------------------------------------------------------------------

    def grant(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        client_id, secret = basic if basic else (form.get("client_id"), form.get("client_secret"))
        if client_id != CLIENT_ID or secret != self.client_secret:
            return 401, {"error": "invalid_client"}
        with self.lock:
            if self.failures:
                return self.failures.pop(0)
            if form.get("grant_type") == "refresh_token":
                used = form.get("refresh_token")
                if used not in self.refresh_tokens:
                    return 400, {"error": "invalid_grant", "error_description": f"unknown refresh token {used}"}
            elif form.get("grant_type") != "client_credentials":
                return 400, {"error": "unsupported_grant_type"}
            token = f"at-{len(self.issued) + 1}-{secrets.token_urlsafe(16)}"
            self.issued.append(token)
            self.valid.add(token)
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if form.get("grant_type") == "refresh_token" and self.rotate:
            with self.lock:
                self.refresh_tokens.discard(form["refresh_token"])
            body["refresh_token"] = self.issue_refresh_token()
        return 200, body


def start_auth_server(client_secret: str | None = None) -> AuthServer:
    auth: AuthServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            header = self.headers.get("Authorization") or ""
            if self.path == "/token" and self.command == "POST":
                started = time.time()
                form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
                basic = None
                if header.startswith("Basic "):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    basic = (unquote_plus(user), unquote_plus(password))  # RFC 6749 2.3.1
                if auth.delay:
                    time.sleep(auth.delay)
                status, payload = auth.grant(form, basic)
                record = TokenRequest(form.get("grant_type", ""), "basic" if basic else "body", form.get("scope"),
                                      form.get("audience"), form.get("refresh_token"), started, time.time())
                with auth.lock:
                    auth.token_requests.append(record)
                self._answer(status, payload)
                return
            token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
            with auth.lock:
                auth.api_requests.append((self.path, token, {k.lower(): v for k, v in self.headers.items()}, body))
                forced = auth.api_script.get(self.path)
                ok = token in auth.valid
            if forced is not None:
                self._answer(forced, {"error": "scripted"})
            elif not ok:
                self._answer(401, {"error": "invalid_token"})
            else:
                self._answer(200, {"ok": True, "token": auth.issued.index(token) + 1})

        do_GET = do_POST = do_PUT = _handle

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # 50 runs connect at once: the default backlog of 5 would refuse some
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    auth = AuthServer(server, client_secret or f"cs-{secrets.token_urlsafe(16)}")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return auth


def encoded_forms(value: str) -> dict[str, str]:
    """A secret as it could appear when stored: raw, URL-encoded, JSON-escaped, base64 (standard and URL-safe)."""
    from urllib.parse import quote, quote_plus

    raw = value.encode()
    b64 = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    forms = {"raw": value, "percent-encoded": quote(value, safe=""), "form-encoded": quote_plus(value),
             "json-escaped": json.dumps(value)[1:-1], "base64": b64, "base64 unpadded": b64.rstrip("="),
             "base64url": urlsafe.rstrip("=")}
    return {name: text for name, text in forms.items() if name == "raw" or text != value}


def leaks(places: dict[str, str], values: dict[str, str]) -> list[str]:
    """``<secret> (<form>) in <place>`` for every secret found anywhere, in any of its encoded forms."""
    return [f"{name} ({form}) in {where}" for name, value in values.items()
            for form, text in encoded_forms(value).items() for where, content in places.items() if text in content]
