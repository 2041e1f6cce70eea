"""OAuth2 connections: ``oauth2_client_credentials`` and ``oauth2_refresh_token`` (RFC 6749 4.4 and 6).

``apply`` only asks for the access token: caching, sharing across workers and refreshing are the
runtime's (engine.connections.runtime). :func:`request_token` is the one call to the token endpoint.
Its failures are ConnectionFailed errors that name the status and the OAuth2 error code only
(``connection crm: token endpoint answered 401 invalid_client``), never the response body, and are
retryable where the endpoint's status is (5xx, 408, 429, timeouts, connection errors). The token
response itself is never recorded anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from engine.connections import ConnectionFailed, ConnectionType, Option, Outbound, Use, register, set_header
from engine.outbound import LinkLocalRefused

RETRYABLE_STATUSES = frozenset({408, 429})
ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # what an OAuth2 `error` may safely show (RFC 6749 5.2)
SENDABLE = re.compile(r"[\x21-\x7e]{1,8192}")  # a token must fit in a header: visible ASCII only


@dataclass(frozen=True)
class Grant:
    """A token endpoint's answer: ``lifetime`` in seconds (None when it did not say)."""

    access_token: str
    lifetime: float | None
    refresh_token: str | None


def _apply(request: Outbound, use: Use) -> None:
    token = use.token()
    set_header(request.headers, "Authorization", f"Bearer {token}")


def request_token(http: httpx.Client, use: Use, *, grant_type: str, refresh_token: str | None = None) -> Grant:
    """POST the grant to the token endpoint and read its answer; ConnectionFailed on any failure."""
    form: dict[str, str] = {"grant_type": grant_type}
    if refresh_token is not None:
        form["refresh_token"] = refresh_token
    scopes = use.value("scopes")
    if scopes:
        form["scope"] = scopes
    audience = use.value("audience")
    if audience:
        form["audience"] = audience
    client_id, client_secret = use.value("client_id"), use.value("client_secret")
    auth: tuple[str | bytes, str | bytes] | None = None
    if use.value("auth_style") == "basic" and client_secret:
        # RFC 6749 2.3.1: both are form-urlencoded before they become the basic-auth user and password,
        # so a secret holding ':' or '%' reaches a conforming server intact (as Authlib does).
        auth = (quote(client_id, safe=""), quote(client_secret, safe=""))
    else:
        form["client_id"] = client_id
        if client_secret:
            form["client_secret"] = client_secret
    timeout = use.seconds("timeout")
    prefix = f"connection {use.name}: token endpoint"
    try:
        response = http.post(use.value("token_url"), data=form, auth=auth or httpx.USE_CLIENT_DEFAULT,
                             timeout=timeout, headers={"Accept": "application/json"})
    except httpx.TimeoutException:
        raise ConnectionFailed(f"{prefix} timed out after {timeout:g}s", retryable=True) from None
    except httpx.InvalidURL:
        raise ConnectionFailed(f"{prefix}: token_url is not a valid URL") from None
    except LinkLocalRefused as exc:  # the deployment's client never connects to link-local addresses
        raise ConnectionFailed(f"{prefix} refused: {exc}") from None
    except httpx.HTTPError as exc:
        raise ConnectionFailed(f"{prefix} unreachable ({type(exc).__name__})", retryable=True) from None
    body = _json(response)
    if not response.is_success:
        code = body.get("error") if isinstance(body, dict) else None
        detail = f" {code}" if isinstance(code, str) and ERROR_CODE.fullmatch(code) else ""
        retryable = response.status_code >= 500 or response.status_code in RETRYABLE_STATUSES
        hint = ""
        if code == "invalid_grant" and refresh_token is not None:
            hint = "; the refresh token was revoked or has expired: set a new one"
        raise ConnectionFailed(f"{prefix} answered {response.status_code}{detail}{hint}", retryable=retryable)
    return _grant(body, prefix)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _grant(body: Any, prefix: str) -> Grant:
    if not isinstance(body, dict):
        raise ConnectionFailed(f"{prefix} answered without a JSON object")
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise ConnectionFailed(f"{prefix} answered without an access_token")
    if not SENDABLE.fullmatch(token):
        raise ConnectionFailed(f"{prefix} answered an access_token that cannot be sent in a header")
    token_type = body.get("token_type", "bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise ConnectionFailed(f"{prefix} answered a token_type other than bearer; only bearer tokens are supported")
    lifetime: float | None = None
    raw = body.get("expires_in")
    if raw is not None:
        try:
            lifetime = max(0.0, float(raw))
        except (TypeError, ValueError):
            raise ConnectionFailed(f"{prefix} answered an expires_in that is not a number") from None
    rotated = body.get("refresh_token")
    return Grant(token, lifetime, rotated if isinstance(rotated, str) and rotated else None)


def _scopes(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    scopes = options.get("scopes")
    if scopes is not None and any(" " in s for s in scopes):
        return [("scopes", "list each scope on its own (they are sent space-separated)")]
    return []


COMMON = (
    Option("token_url", "text", "The token endpoint (https URL).", required=True, example="${CRM_TOKEN_URL}"),
    Option("client_id", "text", "OAuth2 client id.", required=True, example="${CRM_CLIENT_ID}"),
    Option("scopes", "list", "Scopes to ask for.", example="[contacts.write]"),
    Option("audience", "text", "`audience` parameter (Auth0 and others).", example="https://api.example.com"),
    Option("auth_style", "enum", "How the client authenticates: HTTP basic auth, or client_id/client_secret "
           "in the form body.", default="basic", choices=("basic", "body")),
    Option("timeout", "duration", "Timeout of a token request.", default=10.0, example="5s"),
    Option("refresh_before", "duration", "Refresh this long before the token expires (at most half its lifetime).",
           default=60.0, example="2m"),
    Option("default_lifetime", "duration", "Lifetime assumed when the token endpoint sends no expires_in.",
           default=3600.0, example="1h"),
)

register(ConnectionType(
    name="oauth2_client_credentials",
    help="OAuth2 client credentials grant: an access token per connection, cached and shared by every worker.",
    options=(
        *COMMON[:2],
        Option("client_secret", "secret", "OAuth2 client secret.", required=True, example="${CRM_CLIENT_SECRET}"),
        *COMMON[2:],
    ),
    apply=_apply,
    tokens=True,
    check=_scopes,
    example="crm:\n  type: oauth2_client_credentials\n  token_url: ${CRM_TOKEN_URL}\n  client_id: ${CRM_CLIENT_ID}\n"
            "  client_secret: ${CRM_CLIENT_SECRET}\n  scopes: [contacts.write]",
))

register(ConnectionType(
    name="oauth2_refresh_token",
    help="OAuth2 refresh token grant; a refresh token the provider rotates is kept, encrypted, in the store.",
    options=(
        *COMMON[:2],
        Option("client_secret", "secret", "OAuth2 client secret (omit for a public client).",
               example="${HUBSPOT_CLIENT_SECRET}"),
        Option("refresh_token", "secret", "The refresh token you were issued; a newer rotated one in the store "
               "is used instead until this one changes.", required=True, example="${HUBSPOT_REFRESH_TOKEN}"),
        *COMMON[2:],
    ),
    apply=_apply,
    tokens=True,
    check=_scopes,
    example="hubspot:\n  type: oauth2_refresh_token\n  token_url: https://api.hubapi.com/oauth/v1/token\n"
            "  client_id: ${HUBSPOT_CLIENT_ID}\n  client_secret: ${HUBSPOT_CLIENT_SECRET}\n"
            "  refresh_token: ${HUBSPOT_REFRESH_TOKEN}\n  auth_style: body",
))
