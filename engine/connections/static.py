"""Static credentials: ``bearer``, ``basic`` and ``api_key``, read from the environment per request."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from engine.connections import ConnectionType, Option, Outbound, Use, register, set_header


def _bearer(request: Outbound, use: Use) -> None:
    token = use.value("token")
    scheme = use.value("scheme")
    use.secret(token)
    value = f"{scheme} {token}" if scheme else token
    if value != token:
        use.secret(value, "header")
    set_header(request.headers, use.value("header"), value)


def _basic(request: Outbound, use: Use) -> None:
    username, password = use.value("username"), use.value("password")
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    use.secret(credentials)
    use.secret(password, "password")
    set_header(request.headers, "Authorization", f"Basic {credentials}")


def _api_key(request: Outbound, use: Use) -> None:
    key = use.value("key")
    use.secret(key)
    query = use.value("query")
    if query:
        request.params[query] = key
    else:
        set_header(request.headers, use.value("header"), key)


def _one_place(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    if options.get("header") and options.get("query"):
        return [("", "api_key takes either header or query, not both")]
    if not options.get("header") and not options.get("query"):
        return [("", "api_key needs header: <header name> or query: <parameter name>")]
    return []


register(ConnectionType(
    name="bearer",
    help="A static token in the Authorization header (`Bearer <token>`).",
    options=(
        Option("token", "secret", "The token.", required=True, example="${ACME_TOKEN}"),
        Option("header", "header", "Header carrying it.", default="Authorization", example="X-Auth-Token"),
        Option("scheme", "text", "Text before the token; empty for the bare token.", default="Bearer",
               example="Token"),
    ),
    apply=_bearer,
    example="acme:\n  type: bearer\n  token: ${ACME_TOKEN}",
))

register(ConnectionType(
    name="basic",
    help="HTTP basic auth: `Authorization: Basic base64(username:password)`.",
    options=(
        Option("username", "text", "User name (may be a ${VAR}).", required=True, example="${BILLING_USER}"),
        Option("password", "secret", "Password.", required=True, example="${BILLING_PASSWORD}"),
    ),
    apply=_basic,
    example="billing:\n  type: basic\n  username: ${BILLING_USER}\n  password: ${BILLING_PASSWORD}",
))

register(ConnectionType(
    name="api_key",
    help="A static key in a header or a query parameter.",
    options=(
        Option("key", "secret", "The key.", required=True, example="${LEDGER_API_KEY}"),
        Option("header", "header", "Header carrying the key (or use query).", example="X-Api-Key"),
        Option("query", "text", "Query parameter carrying the key (or use header).", example="api_key"),
    ),
    apply=_api_key,
    check=_one_place,
    example="ledger:\n  type: api_key\n  header: X-Api-Key\n  key: ${LEDGER_API_KEY}",
))
