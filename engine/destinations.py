"""Destination protection: per-origin circuit breaker, rate limit and concurrency limit, as pure rules.

A destination is an origin, ``scheme://host:port``: two services on one host (127.0.0.1:8150 and
127.0.0.1:8151) fail and recover apart. The state lives in the store (shared by every worker
process); these functions decide. A step held back by a limit is not an attempt: its run waits,
visibly, with the reason and the time of the next try, so an outage at the CRM does not burn every
retry of every run.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from engine.units import parse_rate as parse_rate  # one grammar for rates: engine.units

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``scheme://host:port`` of an http(s) URL, the key of its destination; None when it has none.

    The default port is written out and the host lower-cased (``HTTPS://API.example.com/x`` is
    ``https://api.example.com:443``), an IPv6 address bracketed, so one service has one key.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port or DEFAULT_PORTS[scheme]}"


def host_of(origin: str) -> str:
    """The host of an origin, without brackets: what a bare-host HOOKLINE_DESTINATIONS key matches."""
    return urlsplit(origin).hostname or ""


def destination_key(key: str) -> str:
    """A HOOKLINE_DESTINATIONS key as stored: an origin, normalised, or a bare host (every origin on it).

    ``127.0.0.1:8150`` is refused rather than guessed (http or https?); so is anything with a path.
    """
    text = key.strip()
    if "://" in text:
        parts = urlsplit(text)
        found = origin_of(text)
        if found is None or parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError(f"{key!r} is not an origin (expected scheme://host[:port], like https://api.example.com:8443)")
        return found
    host = text.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{key!r}: write an origin with its scheme (http://{text}) or a bare host") from None
    if not host or "/" in host or "@" in host:
        raise ValueError(f"{key!r} is neither an origin (https://api.example.com:8443) nor a host (api.example.com)")
    return host


@dataclass(frozen=True)
class Limits:
    """How one destination (an origin) is protected; ``None`` means no limit of that kind."""

    breaker_failures: int = 5  # consecutive failures that open the circuit (0: never)
    breaker_cooldown: float = 30.0  # seconds open before one probe is let through
    rate: float | None = None  # requests per second, shared by all workers
    burst: float | None = None  # bucket size; defaults to max(1, rate)
    concurrency: int | None = None  # requests in flight at once, shared by all workers

    @property
    def shared_state(self) -> bool:
        """Rate and concurrency need a store round trip per call; the breaker alone does not."""
        return self.rate is not None or self.concurrency is not None


@dataclass(frozen=True)
class Destination:
    """The stored state of one origin."""

    origin: str
    state: str = CLOSED
    failures: int = 0
    open_until: float = 0.0
    tokens: float = 0.0
    tokens_at: float = 0.0
    in_flight: int = 0


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_at: float = 0.0
    reason: str = ""


def admit(dest: Destination, limits: Limits, now: float) -> tuple[Verdict, Destination]:
    """Decide whether one request may go now; returns the verdict and the state to store if it goes."""
    if dest.state == OPEN:
        if now < dest.open_until:
            return Verdict(False, dest.open_until, f"circuit open for {dest.origin} after {dest.failures} consecutive "
                                                   "failures"), dest
        dest = replace(dest, state=HALF_OPEN, open_until=now + limits.breaker_cooldown)  # one probe
    elif dest.state == HALF_OPEN and now < dest.open_until and dest.in_flight > 0:
        return Verdict(False, dest.open_until, f"circuit half-open for {dest.origin}: a probe request is in flight"), dest
    if limits.concurrency is not None and dest.in_flight >= limits.concurrency:
        return Verdict(False, now + 1.0, f"{dest.origin} has {dest.in_flight} requests in flight "
                                         f"(limit {limits.concurrency})"), dest
    if limits.rate is not None:
        burst = limits.burst or max(1.0, limits.rate)
        tokens = min(burst, dest.tokens + (now - dest.tokens_at) * limits.rate) if dest.tokens_at else burst
        if tokens < 1.0:
            wait = (1.0 - tokens) / limits.rate
            return Verdict(False, now + wait, f"rate limit for {dest.origin} ({limits.rate:g}/s)"), dest
        dest = replace(dest, tokens=tokens - 1.0, tokens_at=now)
    return Verdict(True), replace(dest, in_flight=dest.in_flight + 1)


def settle(dest: Destination, limits: Limits, *, failed: bool, now: float) -> Destination:
    """Record a finished request: failures count towards opening the circuit, a success closes it."""
    dest = replace(dest, in_flight=max(0, dest.in_flight - 1))
    if not failed:
        return replace(dest, state=CLOSED, failures=0, open_until=0.0)
    failures = dest.failures + 1
    if dest.state == HALF_OPEN or (limits.breaker_failures and failures >= limits.breaker_failures):
        return replace(dest, state=OPEN, failures=failures, open_until=now + limits.breaker_cooldown)
    return replace(dest, failures=failures)


def parse_destinations(text: str) -> dict[str, dict[str, Any]]:
    """HOOKLINE_DESTINATIONS: origin or host -> limit overrides, checked by the fields of a flow's
    ``http.limits`` (engine.steps.http.LIMIT_FIELDS), so a typo (``concurency``) fails at start-up with
    a SettingsError naming it instead of being ignored. Keys come back normalised (destination_key)."""
    from engine.errors import FlowError, SettingsError
    from engine.loader import parse_fields
    from engine.steps.http import LIMIT_FIELDS

    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"HOOKLINE_DESTINATIONS: not JSON ({exc})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise SettingsError('HOOKLINE_DESTINATIONS: expected {"https://api.example.com": {"rate": "10/s", '
                            '"concurrency": 5}, ...}')
    out: dict[str, dict[str, Any]] = {}
    for host, limits in raw.items():
        try:
            key = destination_key(host)
        except ValueError as exc:
            raise SettingsError(f"HOOKLINE_DESTINATIONS: {exc}") from None
        try:
            parsed = parse_fields(LIMIT_FIELDS, limits, host)
            if parsed.get("rate") is not None:
                parse_rate(parsed["rate"])
        except FlowError as exc:
            raise SettingsError(f"HOOKLINE_DESTINATIONS: {exc}") from None
        except ValueError as exc:
            raise SettingsError(f"HOOKLINE_DESTINATIONS: {host}.rate: {exc}") from None
        out[key] = {k: v for k, v in parsed.items() if v is not None}
    return out
