"""Login, CSRF and security headers for the operator UI and the JSON API.

Who may do what:

- ``HOOKLINE_ADMIN_PASSWORD`` set: pages need a login (``/login``, session cookie HttpOnly, SameSite=Lax,
  Secure over HTTPS); ``/api`` takes that session or ``Authorization: Bearer <HOOKLINE_API_TOKEN>``.
- not set: pages and API are open and every page says so in a banner. A Bearer token, when sent, must
  still be right. They answer only requests whose Host is trusted (``HOOKLINE_TRUSTED_HOSTS``, by default
  the loopback names and the address served on), so a DNS-rebinding page cannot drive a local UI.
- always open: ``/hooks/*`` (providers), the sandbox receiver ``/sandbox/<name>/...``, ``/healthz``,
  ``/readyz``, ``/metrics`` (for Prometheus: expose it only internally), the editors' JSON Schemas
  under ``/schemas/`` and ``/static``.

Every POST from a browser carries the session's CSRF token, as the ``csrf_token`` form field or the
``X-CSRF-Token`` header (fetch from app.js); the login form too, so a page on another site cannot log
a browser into an attacker's session. API calls with a valid Bearer token carry no cookie and are exempt.

A login is a server-side session (web/sessions.py): logout ends it for every copy of the cookie, and one
unused for ``HOOKLINE_SESSION_IDLE_S`` ends by itself.
"""

from __future__ import annotations

import fnmatch
import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, g, jsonify, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

from web.errors import ApiError
from web.hooks import service
from web.sessions import SessionRegistry

bp = Blueprint("auth", __name__)

OPEN_PREFIXES = ("/hooks/", "/sandbox/", "/static/", "/schemas/")
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # scraped by Prometheus; expose only internally
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison; an empty expected value never matches."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def password_required() -> bool:
    return bool(service().settings.admin_password)


def logged_in() -> bool:
    """A login whose server-side session is still live (checked once per request)."""
    if "logged_in" not in g:
        token = session.get("sid")
        g.logged_in = bool(session.get("user")) and isinstance(token, str) and _registry().alive(token)
        if session.get("user") and not g.logged_in:
            session.clear()  # revoked or idle: the browser gets a fresh, empty session
    return bool(g.logged_in)


def _registry() -> SessionRegistry:
    registry: SessionRegistry = current_app.extensions["hookline_sessions"]
    return registry


def host_name(host: str) -> str:
    """The name part of a Host header: no port, no IPv6 brackets, no trailing dot, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            name = host
    return name.rstrip(".")


def trusted_host(host: str, patterns: tuple[str, ...]) -> bool:
    name = host_name(host)
    return bool(name) and any(fnmatch.fnmatchcase(name, p.strip().lower().rstrip(".")) for p in patterns)


def csrf_token() -> str:
    """The session's CSRF token, created on first use (templates call it for every form)."""
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _bearer() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _https() -> bool:
    """HTTPS directly, or behind a proxy that says so (what ProxyFix would conclude)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.is_secure or forwarded == "https"


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with the Secure flag whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or _https()

    def open_session(self, app: Flask, request: Any) -> Any:
        """Providers carry no session: webhooks get Flask's null session, not a cookie check each."""
        if request.path.startswith("/hooks/"):
            return None
        return super().open_session(app, request)


def _guard() -> Any:
    """Runs before every request: open paths, then Bearer, then login, then CSRF."""
    path = request.path
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return None
    settings = service().settings
    if not settings.admin_password:  # an open UI: only for names that are ours (DNS rebinding)
        trusted = settings.trusted_hosts or LOOPBACK_HOSTS
        if not trusted_host(request.host, trusted):  # plain JSON: no error page, so no session or CSRF token either
            message = (f"untrusted Host {request.host[:100]!r}: without HOOKLINE_ADMIN_PASSWORD the UI answers only "
                       "HOOKLINE_TRUSTED_HOSTS (default: localhost and the address served on)")
            return jsonify({"ok": False, "error": message, "status": 400}), 400
    api = path.startswith("/api/")
    token = _bearer() if api else None
    if token is not None:
        if not _same(token, service().settings.api_token):
            raise ApiError(401, "invalid bearer token (it must equal HOOKLINE_API_TOKEN)")
        return None
    if password_required() and not logged_in() and path != url_for("auth.login"):
        if api or path.endswith(".json") or request.method != "GET":
            raise ApiError(401, "login required: sign in at /login, or send Authorization: Bearer <HOOKLINE_API_TOKEN>")
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if request.method in UNSAFE_METHODS:
        _check_csrf(api)
    return None


def _check_csrf(api: bool) -> None:
    sent = request.headers.get("X-CSRF-Token") or ("" if api else request.form.get("csrf_token", ""))
    if not sent:
        raise ApiError(400, "CSRF token missing: reload the page and try again"
                       + ("" if not api else " (scripts: send Authorization: Bearer <HOOKLINE_API_TOKEN>)"))
    if not _same(sent, str(session.get("csrf") or "")):
        raise ApiError(400, "CSRF token invalid or expired: reload the page and try again")


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Frame-Options", "DENY")
    if not request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")  # run data stays out of shared and back/forward caches
    return response


def _safe_next(target: str | None) -> str:
    """Only a path on this site: ``//evil.test`` or ``https://evil.test`` would make /login an open redirect."""
    if not target:
        return url_for("ui.flows")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("ui.flows")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if not password_required():
        return redirect(url_for("ui.flows"))
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=target, error=None)
    if not _same(request.form.get("password", ""), service().settings.admin_password):
        return render_template("login.html", next=target, error="Wrong password."), 401
    old = session.get("sid")
    if isinstance(old, str):
        _registry().end(old)
    session.clear()  # a new session on login: no fixation
    session["user"] = "admin"
    session["sid"] = _registry().start()
    g.logged_in = True
    csrf_token()
    return redirect(target)


@bp.post("/logout")
def logout() -> Any:
    token = session.get("sid")
    if isinstance(token, str):
        _registry().end(token)  # every saved copy of this cookie stops working now
    session.clear()
    return redirect(url_for("auth.login") if password_required() else url_for("ui.flows"))


def init_app(app: Flask) -> None:
    svc = app.extensions["hookline"]
    app.extensions["hookline_sessions"] = SessionRegistry(svc.store.engine, svc.settings.session_idle_s)
    app.session_interface = SessionInterface()
    app.before_request(_guard)
    app.after_request(_security_headers)

    @app.context_processor
    def _auth_globals() -> dict[str, Any]:
        return {"csrf_token": csrf_token, "password_required": password_required(), "logged_in": logged_in()}

    app.register_blueprint(bp)
