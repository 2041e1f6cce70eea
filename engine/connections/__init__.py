"""Connections: outbound auth declared once per deployment, in ``<flows_dir>/connections.yaml``.

An http step names one (``connection: crm``) instead of carrying credentials. Each connection type
declares its options once, next to what it adds to a request, as step types do in engine.steps:

- ``bearer``, ``basic``, ``api_key``: a static header or query parameter (engine.connections.static);
- ``oauth2_client_credentials``, ``oauth2_refresh_token``: an access token fetched from a token
  endpoint, cached in the store for every worker and refreshed before it expires or on a 401
  (engine.connections.oauth2, engine.connections.runtime);
- ``hmac_signature``, ``standard-webhooks``: a signature of the exact bytes sent
  (engine.connections.signing).

Option values are ``${VAR}`` references resolved per request, so the file holds no secret. Every
value a connection adds to a request is registered as a secret of the run (``connection:<name>``),
so records show ``${connection:<name>}`` where it would have been (I9).

Pure core: never imports flask, huey or sqlalchemy; the shared token cache is behind
:class:`engine.connections.runtime.TokenCache` (engine.connection_store backs it with the database).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import StepError

CONNECTIONS_FILE = "connections.yaml"


@dataclass(frozen=True)
class Option:
    """One key of a connection's declaration.

    ``kind``: ``text`` (may hold ``${VAR}``s), ``secret`` (must be a ``${VAR}`` reference: no secret is
    written in a file), ``list`` (of strings), ``enum`` (one of ``choices``), ``duration`` (10s, 2m),
    ``header`` (an HTTP header name).
    """

    name: str
    kind: str
    help: str
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    example: str = ""


@dataclass(frozen=True)
class Connection:
    """A validated entry of connections.yaml: option values as written (``${VAR}``s unresolved)."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    file: str = ""
    line: int | None = None

    @property
    def kind(self) -> ConnectionType:
        return REGISTRY[self.type]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass
class Outbound:
    """The request an http step is about to send; a connection adds headers or query parameters to it.

    ``content`` is the exact body bytes that will be sent (b"" for none): signatures are computed over
    them. ``message_id`` is the step's Idempotency-Key, the same on every retry (a Standard Webhooks id).
    """

    method: str
    url: str
    headers: dict[str, str]
    params: dict[str, str]
    content: bytes
    message_id: str


class Use(Protocol):
    """What a connection type may use while it prepares one request (the runtime provides it)."""

    @property
    def name(self) -> str:
        """The connection's name, for messages."""

    def now(self) -> float:
        """Current time (seconds since the epoch), from the runtime's clock."""

    def value(self, option: str) -> str:
        """An option with its ``${VAR}``s resolved (a list joined by spaces; its default, or "", when absent).

        ConnectionFailed names a variable that is not set.
        """

    def seconds(self, option: str) -> float:
        """A duration option, in seconds."""

    def secret(self, value: str, label: str = "") -> None:
        """Register a value added to the request, so every record shows ``${connection:<name>}`` instead."""

    def token(self) -> str:
        """The OAuth2 access token, from the shared cache or a fresh token request."""


@dataclass(frozen=True)
class ConnectionType:
    """A connection type: its options (validation and docs come from them) and what it adds to a request."""

    name: str
    help: str
    options: tuple[Option, ...]
    example: str
    apply: Callable[[Outbound, Use], None]
    tokens: bool = False  # OAuth2: a cached access token, refreshed once when the target answers 401
    check: Callable[[Mapping[str, Any]], list[tuple[str, str]]] | None = None  # rules across options

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)


class ConnectionFailed(StepError):
    """A connection could not prepare a request: a variable unset, a token endpoint refusing or down.

    Messages start with ``connection <name>:`` and never contain a secret.
    """


REGISTRY: dict[str, ConnectionType] = {}


def register(kind: ConnectionType) -> ConnectionType:
    REGISTRY[kind.name] = kind
    return kind


def set_header(headers: dict[str, str], name: str, value: str) -> None:
    """Set ``name`` replacing any spelling of it already there: a connection's value wins over the step's."""
    for existing in [k for k in headers if k.lower() == name.lower()]:
        del headers[existing]
    headers[name] = value


from engine.connections import oauth2 as _oauth2  # noqa: E402,F401  registration side effect
from engine.connections import signing as _signing  # noqa: E402,F401
from engine.connections import static as _static  # noqa: E402,F401
