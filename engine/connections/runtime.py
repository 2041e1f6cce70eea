"""ConnectionRuntime: applies an http step's connection to its request; OAuth2 tokens shared through a TokenCache.

One runtime per process, handed to steps in ``RunOptions.connections``. An access token is looked
up in this order: the process's memo, the shared cache (the database: every worker, every
machine), and only then the token endpoint. Refreshing takes a lease on the connection's cache row
first, so one worker refreshes at a time: the others poll the row until the new token appears (50
runs finding the token expired make one token request). A token is refreshed ``refresh_before``
its expiry, and once more when the target answers 401 with it. When the refresh fails, workers that
were waiting for it fail the same way instead of each asking again.

The cache holds tokens encrypted with a key derived (HKDF-SHA256) from HOOKLINE_SECRET_KEY, or,
when that is unset, from the connection's own client secret (or refresh token), which is read from
the environment and never stored. A key that changes makes the cached values unreadable: they are
then treated as absent and fetched again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx

from engine import envrefs
from engine.connections import Connection, ConnectionFailed, Outbound, set_header
from engine.connections.oauth2 import request_token
from engine.errors import MissingEnvError
from engine.templating import RenderContext

log = logging.getLogger("hookline.connections")

LEASE_MARGIN_S = 5.0  # a refresh lease outlives the token request's timeout by this much
POLL_MIN_S, POLL_MAX_S = 0.02, 0.25  # how often a waiting worker looks for the refreshed token


@dataclass(frozen=True)
class CachedToken:
    """A connection's row in the shared cache, decrypted (a value that does not decrypt reads as None)."""

    access_token: str | None = None
    refresh_at: float = 0.0
    expires_at: float | None = None
    refresh_token: str | None = None  # the newest rotated refresh token
    seed: str | None = None  # keyed hash of the environment's refresh token it descends from
    fingerprint: str = ""  # of the settings the token was issued for (token_url, client_id, scopes ...)
    lease_owner: str | None = None
    lease_until: float = 0.0
    error: str | None = None  # the last refresh's failure, cleared by a success
    error_retryable: bool = False
    error_at: float | None = None
    refreshed_at: float | None = None

    def leased(self, now: float) -> bool:
        return self.lease_owner is not None and self.lease_until > now


class TokenCache(Protocol):
    """Where access tokens are shared: engine.connection_store (the database) or MemoryTokenCache (one process).

    ``key`` is the connection's 32-byte encryption key; implementations that persist encrypt with it.
    """

    def get(self, name: str, key: bytes) -> CachedToken | None:
        """The row, or None when there is none yet."""

    def lease(self, name: str, key: bytes, owner: str, now: float, until: float) -> CachedToken | None:
        """Take the refresh lease when no one holds it (or theirs expired); the row as it is then, or None."""

    def put(self, name: str, key: bytes, owner: str, token: CachedToken, now: float) -> None:
        """Store a refreshed token (and rotated refresh token) and release ``owner``'s lease."""

    def fail(self, name: str, owner: str, message: str, retryable: bool, now: float) -> None:
        """Record a failed refresh and release ``owner``'s lease."""

    def release(self, name: str, owner: str) -> None:
        """Give the lease back without a new token."""

    def statuses(self) -> dict[str, CachedToken]:
        """Every row, tokens left out (for the flows page)."""


class MemoryTokenCache:
    """A TokenCache for one process (``hookline run``, unit tests): the same lease rules, in memory."""

    def __init__(self) -> None:
        self._rows: dict[str, CachedToken] = {}
        self._lock = threading.Lock()

    def get(self, name: str, key: bytes) -> CachedToken | None:
        with self._lock:
            return self._rows.get(name)

    def lease(self, name: str, key: bytes, owner: str, now: float, until: float) -> CachedToken | None:
        with self._lock:
            row = self._rows.get(name, CachedToken())
            if row.leased(now):
                return None
            self._rows[name] = replace(row, lease_owner=owner, lease_until=until)
            return self._rows[name]

    def put(self, name: str, key: bytes, owner: str, token: CachedToken, now: float) -> None:
        with self._lock:
            self._rows[name] = replace(token, lease_owner=None, lease_until=0.0, error=None, error_at=None,
                                       refreshed_at=now)

    def fail(self, name: str, owner: str, message: str, retryable: bool, now: float) -> None:
        with self._lock:
            row = self._rows.get(name, CachedToken())
            self._rows[name] = replace(row, lease_owner=None, lease_until=0.0, error=message,
                                       error_retryable=retryable, error_at=now)

    def release(self, name: str, owner: str) -> None:
        with self._lock:
            row = self._rows.get(name)
            if row is not None and row.lease_owner == owner:
                self._rows[name] = replace(row, lease_owner=None, lease_until=0.0)

    def statuses(self) -> dict[str, CachedToken]:
        with self._lock:
            return {n: replace(r, access_token=None, refresh_token=None) for n, r in self._rows.items()}


class _Use:
    """engine.connections.Use for one connection on one request."""

    def __init__(self, runtime: ConnectionRuntime, conn: Connection, render: RenderContext,
                 http: httpx.Client | None) -> None:
        self.runtime = runtime
        self.conn = conn
        self.render = render
        self.http = http
        self.used: str | None = None  # the access token this request carries

    @property
    def name(self) -> str:
        return self.conn.name

    def now(self) -> float:
        return self.runtime.clock()

    def value(self, option: str) -> str:
        raw = self.conn.options.get(option)
        if raw is None:
            default = self.conn.kind.option(option).default
            return "" if default is None else str(default)
        try:
            if isinstance(raw, list):
                return " ".join(envrefs.expand(str(item), self.render.env) for item in raw)
            return envrefs.expand(str(raw), self.render.env)
        except MissingEnvError as exc:
            raise ConnectionFailed(f"connection {self.name}: {exc} ({option})") from None

    def seconds(self, option: str) -> float:
        raw = self.conn.options.get(option)
        return float(raw if raw is not None else self.conn.kind.option(option).default)

    def secret(self, value: str, label: str = "") -> None:
        if not value:
            return
        base = f"connection:{self.name}" + (f":{label}" if label else "")
        name, n = base, 1
        while self.render.secrets.get(name, value) != value:  # a refreshed token keeps the old one redacted too
            n += 1
            name = f"{base}:{n}"
        self.render.secrets[name] = value

    def token(self) -> str:
        self.used = self.runtime.token(self)
        return self.used


@dataclass
class Prepared:
    """A request a connection was applied to; ``sender`` sends it, refreshing the token once on a 401."""

    use: _Use
    request: Outbound

    def sender(self, client: httpx.Client) -> Callable[..., httpx.Response]:
        def send(method: str, url: str, **kwargs: Any) -> httpx.Response:
            response = client.request(method, url, **kwargs)
            if response.status_code != 401 or self.use.used is None:
                return response
            response.close()
            token = self.use.runtime.token(self.use, stale=self.use.used)
            self.use.used = token
            set_header(kwargs["headers"], "Authorization", f"Bearer {token}")
            log.info("connection %s: the target answered 401; sent again with a refreshed token", self.use.name)
            return client.request(method, url, **kwargs)

        return send


def derive_key(material: str, name: str) -> bytes:
    """HKDF-SHA256 (RFC 5869, one block): a 32-byte key per connection from the deployment's secret."""
    prk = hmac.new(b"hookline connection tokens v1", material.encode(), hashlib.sha256).digest()
    return hmac.new(prk, name.encode() + b"\x01", hashlib.sha256).digest()


class ConnectionRuntime:
    def __init__(
        self,
        lookup: Callable[[str], Connection | None],
        cache: TokenCache | None = None,
        *,
        owner: str = "local",
        secret_key: str = "",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.lookup = lookup
        self.cache: TokenCache = cache if cache is not None else MemoryTokenCache()
        self.owner = owner
        self.secret_key = secret_key
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        self._memo: dict[str, tuple[str, str, float]] = {}  # name -> (fingerprint, token, refresh at)
        self._lock = threading.Lock()

    def prepare(self, name: str, request: Outbound, render: RenderContext, http: httpx.Client | None) -> Prepared:
        """Add the connection's credentials or signature to ``request``; ConnectionFailed when it cannot."""
        conn = self.lookup(name)
        if conn is None:
            raise ConnectionFailed(f"connection {name}: not defined (or invalid) in connections.yaml")
        use = _Use(self, conn, render, http)
        conn.kind.apply(request, use)
        return Prepared(use, request)

    def statuses(self) -> dict[str, CachedToken]:
        """Token rows for the flows page; empty when the cache cannot be read."""
        try:
            return self.cache.statuses()
        except Exception as exc:  # noqa: BLE001 - a status page must render with the database down
            log.warning("connection token statuses unavailable: %s", exc)
            return {}

    # --- access tokens ------------------------------------------------------------------------------

    def token(self, use: _Use, stale: str | None = None) -> str:
        """An access token for the connection that is not ``stale`` (the one a target just refused)."""
        fingerprint = self._fingerprint(use)
        now = self.clock()
        with self._lock:
            memo = self._memo.get(use.name)
        if memo is not None and memo[0] == fingerprint and memo[1] != stale and now < memo[2]:
            token = memo[1]
        else:
            token = self._shared(use, fingerprint, stale)
        use.secret(token)
        return token

    def _shared(self, use: _Use, fingerprint: str, stale: str | None) -> str:
        key = self._key(use)
        holder = f"{self.owner[:90]}:{uuid.uuid4().hex[:8]}"  # per attempt: two threads of one process are two holders
        lease_s = use.seconds("timeout") + LEASE_MARGIN_S
        started = self.clock()
        deadline = started + lease_s + 1.0
        pause = POLL_MIN_S
        while True:
            now = self.clock()
            row = self.cache.get(use.name, key)
            if self._usable(row, fingerprint, now, stale):
                return self._remember(use.name, row)
            if row is None or not row.leased(now):
                if row is not None and row.error is not None and row.error_at is not None and row.error_at >= started:
                    # the refresh this worker was waiting for failed: fail the same way, do not ask again
                    raise ConnectionFailed(row.error, retryable=row.error_retryable)
                held = self.cache.lease(use.name, key, holder, now, now + lease_s)
                if held is not None:
                    if self._usable(held, fingerprint, now, stale):
                        self.cache.release(use.name, holder)
                        return self._remember(use.name, held)
                    return self._refresh(use, key, fingerprint, held, holder)
            if now > deadline:
                raise ConnectionFailed(f"connection {use.name}: another worker's token request has not finished "
                                       f"after {lease_s:g}s", retryable=True)
            self.sleep(pause * (0.5 + self.rng() / 2))
            pause = min(pause * 2, POLL_MAX_S)

    @staticmethod
    def _usable(row: CachedToken | None, fingerprint: str, now: float, stale: str | None) -> bool:
        return (row is not None and row.access_token is not None and row.fingerprint == fingerprint
                and now < row.refresh_at and row.access_token != stale)

    def _remember(self, name: str, row: CachedToken | None) -> str:
        assert row is not None and row.access_token is not None
        with self._lock:
            self._memo[name] = (row.fingerprint, row.access_token, row.refresh_at)
        return row.access_token

    def _refresh(self, use: _Use, key: bytes, fingerprint: str, held: CachedToken, holder: str) -> str:
        """Ask the token endpoint (this worker holds the lease) and share the answer."""
        asked = self.clock()
        seed: str | None = None
        rotated: str | None = None
        try:
            if use.http is None:
                raise ConnectionFailed(f"connection {use.name}: no HTTP client available for the token request")
            if use.conn.type == "oauth2_refresh_token":
                issued = use.value("refresh_token")
                seed = hmac.new(key, b"refresh token:" + issued.encode(), hashlib.sha256).hexdigest()[:32]
                # the newest rotated token, unless the operator has set a new one in the environment since
                current = held.refresh_token if held.refresh_token and held.seed == seed else issued
                grant = request_token(use.http, use, grant_type="refresh_token", refresh_token=current)
                rotated = grant.refresh_token or current
            else:
                grant = request_token(use.http, use, grant_type="client_credentials")
        except ConnectionFailed as exc:
            self.cache.fail(use.name, holder, exc.message, exc.retryable, self.clock())
            log.warning("%s", exc.message)
            raise
        except BaseException:
            self.cache.release(use.name, holder)
            raise
        lifetime = grant.lifetime if grant.lifetime is not None else use.seconds("default_lifetime")
        margin = min(use.seconds("refresh_before"), lifetime / 2)
        row = CachedToken(access_token=grant.access_token, refresh_at=asked + lifetime - margin,
                          expires_at=asked + lifetime, refresh_token=rotated, seed=seed, fingerprint=fingerprint)
        self.cache.put(use.name, key, holder, row, self.clock())
        log.info("connection %s: new access token, valid for %.0f s", use.name, lifetime)
        return self._remember(use.name, row)

    def _key(self, use: _Use) -> bytes:
        material = self.secret_key or use.value("client_secret")
        if not material and use.conn.type == "oauth2_refresh_token":
            material = use.value("refresh_token")
        return derive_key(material, use.name)

    @staticmethod
    def _fingerprint(use: _Use) -> str:
        """Changes when what the token was issued for changes, so an edited connection gets a new token."""
        parts = [use.conn.type, *(use.value(o) for o in ("token_url", "client_id", "scopes", "audience"))]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
