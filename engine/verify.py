"""Webhook signature and token verification presets: raw body bytes and headers in, a verdict out.

Pure: no I/O, no clock and no environment of its own. The web ingress passes the request, the process
environment and the time, so tests and benchmarks can replay any moment. Every comparison is constant-time
(``hmac.compare_digest``). Every secret may be a ``${VAR}`` reference, resolved at the last moment so a
rotated value is picked up without reloading the flow, and several secrets may be listed for rotation.

A request that does not verify raises :class:`VerificationError` (401). A secret that is not configured
raises :class:`VerificationUnavailable` (503), so the provider retries once it is. No message ever contains
a secret or an expected signature: they end up in logs and in the UI.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from engine import envrefs
from engine.errors import MissingEnvError, VerificationError, VerificationUnavailable

__all__ = ["PROVIDERS", "VerifyConfig", "hint", "parse_verify", "secret_fields", "sign", "verify_request"]

DEFAULT_TOLERANCE = 300
"""Seconds a signed timestamp may differ from now, either way; what Stripe, Slack and Standard Webhooks use."""

ALGORITHMS: dict[str, Callable[[], Any]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
ENCODINGS = ("hex", "base64")


@dataclass(frozen=True)
class _Spec:
    """What a provider accepts under ``trigger.verify`` besides ``provider``."""

    keys: frozenset[str]
    uses_secret: bool = True
    timestamped: bool = False


_SPECS: dict[str, _Spec] = {
    "basic": _Spec(frozenset({"username", "password"}), uses_secret=False),
    "github": _Spec(frozenset()),
    "hmac": _Spec(frozenset({"header", "algorithm", "encoding", "prefix", "timestamp_header", "tolerance"})),
    "shopify": _Spec(frozenset()),
    "slack": _Spec(frozenset({"tolerance"}), timestamped=True),
    "standard-webhooks": _Spec(frozenset({"tolerance"}), timestamped=True),
    "stripe": _Spec(frozenset({"tolerance"}), timestamped=True),
    "token": _Spec(frozenset({"header", "query"})),
}

PROVIDERS: tuple[str, ...] = tuple(sorted(_SPECS))

# RFC 9110 token characters: anything else cannot be a header name.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DURATION = re.compile(r"\s*([0-9]+)\s*(s|m|h)?\s*")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, None: 1}
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True)
class VerifyConfig:
    """A validated ``trigger.verify`` mapping; build it with :func:`parse_verify`.

    ``secrets`` keeps the raw strings (with their ``${VAR}`` references) so values are read per request.
    ``options`` holds every other key, with defaults filled in (``tolerance`` in whole seconds).
    """

    provider: str
    secrets: tuple[str, ...]
    options: Mapping[str, Any]


# --------------------------------------------------------------------------- parsing


def parse_verify(raw: Mapping[str, Any]) -> tuple[VerifyConfig | None, list[tuple[str, str]]]:
    """Validate the YAML mapping under ``trigger.verify``; return (config, problems).

    Every problem is reported, each as (sub-key, one-line message), with '' for the mapping as a whole,
    so the loader can show them all at once. The config is None whenever there is a problem: a flow is
    never half-loaded. Secrets are not resolved here (the environment may differ at request time), but a
    literal Standard Webhooks secret is checked to be base64.
    """
    if not isinstance(raw, Mapping):
        return None, [("", "must be a mapping with a provider key, e.g. {provider: github, secret: ${GITHUB_SECRET}}")]
    problems: list[tuple[str, str]] = []
    provider = raw.get("provider")
    if provider is None:
        problems.append(("provider", f"required; expected one of: {', '.join(PROVIDERS)}"))
    elif not isinstance(provider, str) or provider not in _SPECS:
        problems.append(("provider", f"unknown verify provider {provider!r}; expected one of: {', '.join(PROVIDERS)}"))
    if problems:
        # Which other keys are allowed depends on the provider, so nothing more can be checked.
        return None, problems
    assert isinstance(provider, str)
    spec = _SPECS[provider]

    allowed = spec.keys | {"provider"} | ({"secret"} if spec.uses_secret else set())
    for key in raw:
        if key not in allowed:
            expected = ", ".join(sorted(allowed - {"provider"}))
            problems.append((str(key), f"unknown key {str(key)!r} for provider {provider}; allowed keys: {expected}"))

    secrets: tuple[str, ...] = ()
    if spec.uses_secret:
        secrets = _parse_secrets(raw, provider, problems)

    options: dict[str, Any] = {}
    if spec.timestamped:
        options["tolerance"] = _parse_tolerance(raw, problems)
    if provider == "hmac":
        _parse_hmac(raw, options, problems)
    elif provider == "token":
        _parse_token(raw, options, problems)
    elif provider == "basic":
        for key in ("username", "password"):
            value = _required_str(raw, key, problems, f"the basic-auth {key}, e.g. ${{HOOK_{key.upper()}}}")
            if value is not None:
                options[key] = value

    if problems:
        return None, problems
    return VerifyConfig(provider, secrets, MappingProxyType(options)), []


def _parse_secrets(raw: Mapping[str, Any], provider: str, problems: list[tuple[str, str]]) -> tuple[str, ...]:
    value = raw.get("secret")
    if value is None:
        problems.append(("secret", "required: a string or a list of strings, e.g. ${WEBHOOK_SECRET}"))
        return ()
    items = value if isinstance(value, list) else [value]
    if not items:
        problems.append(("secret", "must list at least one secret"))
        return ()
    secrets: list[str] = []
    for index, item in enumerate(items):
        where = f"secret[{index}]" if isinstance(value, list) else "secret"
        if not isinstance(item, str):
            problems.append(("secret", f"{where} must be a string, not {type(item).__name__}"))
        elif item == "":
            problems.append(("secret", f"{where} must not be empty"))
        elif provider == "standard-webhooks" and not envrefs.refs(item) and _whsec_key(item) is None:
            # A literal secret can be checked now; a ${VAR} one only when it is resolved.
            problems.append(("secret", f"{where} must be whsec_ followed by base64 (Standard Webhooks secret format)"))
        else:
            secrets.append(item)
    return tuple(secrets)


def _parse_tolerance(raw: Mapping[str, Any], problems: list[tuple[str, str]]) -> int:
    value = raw.get("tolerance", DEFAULT_TOLERANCE)
    seconds: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds is None or seconds <= 0:
        problems.append(("tolerance", "must be a positive number of seconds or a duration like '300s', '5m', '1h'"))
        return DEFAULT_TOLERANCE
    return seconds


def _required_str(raw: Mapping[str, Any], key: str, problems: list[tuple[str, str]], what: str) -> str | None:
    value = raw.get(key)
    if value is None:
        problems.append((key, f"required: {what}"))
        return None
    if not isinstance(value, str) or value == "":
        problems.append((key, f"must be a non-empty string: {what}"))
        return None
    return value


def _header_option(raw: Mapping[str, Any], key: str, problems: list[tuple[str, str]]) -> str | None:
    value = _required_str(raw, key, problems, "an HTTP header name, e.g. X-Signature")
    if value is not None and not _HEADER_NAME.fullmatch(value):
        problems.append((key, f"{value!r} is not a valid HTTP header name"))
        return None
    return value


def _parse_hmac(raw: Mapping[str, Any], options: dict[str, Any], problems: list[tuple[str, str]]) -> None:
    header = _header_option(raw, "header", problems)
    if header is not None:
        options["header"] = header
    algorithm = raw.get("algorithm", "sha256")
    if not isinstance(algorithm, str) or algorithm.lower() not in ALGORITHMS:
        problems.append(("algorithm", f"must be one of {', '.join(ALGORITHMS)}"))
    else:
        options["algorithm"] = algorithm.lower()
    encoding = raw.get("encoding", "hex")
    if not isinstance(encoding, str) or encoding.lower() not in ENCODINGS:
        problems.append(("encoding", f"must be one of {', '.join(ENCODINGS)}"))
    else:
        options["encoding"] = encoding.lower()
    prefix = raw.get("prefix", "")
    if not isinstance(prefix, str):
        problems.append(("prefix", "must be a string, e.g. 'sha256='"))
    else:
        options["prefix"] = prefix
    if "timestamp_header" in raw:
        ts_header = _header_option(raw, "timestamp_header", problems)
        if ts_header is not None:
            options["timestamp_header"] = ts_header
            if header is not None and ts_header.lower() == header.lower():
                problems.append(("timestamp_header", "must differ from header"))
        options["tolerance"] = _parse_tolerance(raw, problems)
    elif "tolerance" in raw:
        problems.append(("tolerance", "only applies together with timestamp_header"))


def _parse_token(raw: Mapping[str, Any], options: dict[str, Any], problems: list[tuple[str, str]]) -> None:
    if "header" in raw and "query" in raw:
        problems.append(("", "token takes either header or query, not both"))
    elif "header" in raw:
        header = _header_option(raw, "header", problems)
        if header is not None:
            options["header"] = header
    elif "query" in raw:
        query = _required_str(raw, "query", problems, "the query parameter carrying the token, e.g. token")
        if query is not None:
            options["query"] = query
    else:
        problems.append(("", "token needs header: <header name> or query: <parameter name>"))


# --------------------------------------------------------------------------- secrets


def _whsec_key(secret: str) -> bytes | None:
    """Decode a Standard Webhooks secret: ``whsec_`` then base64; the prefix is optional per the spec."""
    text = secret.removeprefix("whsec_").rstrip("=")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return None
    return key or None


def _resolve_one(raw: str, env: Mapping[str, str]) -> tuple[str | None, str]:
    """(value, "") or (None, reason the value is unusable); the reason names variables, never values."""
    try:
        value = envrefs.expand(raw, env)
    except MissingEnvError as exc:
        return None, str(exc)
    if value == "":
        names = [ref.name for ref in envrefs.refs(raw)]
        return None, f"the secret from {', '.join(names)} is empty" if names else "the secret is empty"
    return value, ""


def _unavailable(reasons: Sequence[str]) -> VerificationUnavailable:
    detail = "; ".join(dict.fromkeys(reasons)) or "no secret is listed"
    return VerificationUnavailable(f"verification secret for flow is not configured: {detail}")


def _keys(config: VerifyConfig, env: Mapping[str, str], *, first_only: bool = False) -> list[bytes]:
    """HMAC keys of the secrets that resolve; VerificationUnavailable when none does."""
    keys: list[bytes] = []
    reasons: list[str] = []
    for raw in config.secrets[:1] if first_only else config.secrets:
        value, reason = _resolve_one(raw, env)
        if value is None:
            reasons.append(reason)
        elif config.provider == "standard-webhooks":
            key = _whsec_key(value)
            if key is None:
                reasons.append("a secret is not whsec_ followed by base64")
            else:
                keys.append(key)
        else:
            # Stripe, Slack, GitHub and Shopify all use the secret's UTF-8 bytes as the key, whsec_ included.
            keys.append(_utf8(value))
    if not keys:
        raise _unavailable(reasons)
    return keys


def _basic_credentials(config: VerifyConfig, env: Mapping[str, str]) -> tuple[str, str]:
    username, reason_user = _resolve_one(str(config.options.get("username", "")), env)
    password, reason_pass = _resolve_one(str(config.options.get("password", "")), env)
    if username is None or password is None:
        raise _unavailable([r for r in (reason_user, reason_pass) if r])
    return username, password


# --------------------------------------------------------------------------- checks shared by presets


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name.lower())
    if value is None:
        raise VerificationError(f"missing {name} header")
    value = value.strip()
    if not value:
        raise VerificationError(f"empty {name} header")
    return value


def _timestamp(value: str, what: str) -> int:
    if not _TIMESTAMP.fullmatch(value):
        raise VerificationError(f"{what} is malformed: expected a Unix timestamp in seconds")
    return int(value)


def _check_tolerance(timestamp: int, now: float, tolerance: int) -> None:
    """Reject replays (too old) and clocks or forgers far ahead (too far in the future)."""
    age = now - timestamp
    if age > tolerance:
        raise VerificationError(f"timestamp outside the {tolerance} s tolerance ({int(age)} s old)")
    if -age > tolerance:
        raise VerificationError(f"timestamp outside the {tolerance} s tolerance ({int(-age)} s in the future)")


def _tolerance(config: VerifyConfig) -> int:
    return int(config.options.get("tolerance", DEFAULT_TOLERANCE))


def _unhex(value: str, size: int) -> bytes | None:
    # bytes.fromhex alone would accept spaces between bytes.
    if len(value) != 2 * size or not _HEX.fullmatch(value):
        return None
    return bytes.fromhex(value)


def _unb64(value: str, size: int) -> bytes | None:
    try:
        decoded = base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return None
    return decoded if len(decoded) == size else None


def _mac(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, message, ALGORITHMS[algorithm]).digest()


def _require_match(
    keys: Sequence[bytes], message: bytes, candidates: Sequence[bytes], algorithm: str = "sha256"
) -> None:
    """Compare every key against every candidate without stopping early, so timing says nothing about which."""
    matched = False
    for key in keys:
        expected = _mac(key, message, algorithm)
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise VerificationError(f"no signature matches (checked {_count(len(keys), 'secret')})")


def _utf8(text: str) -> bytes:
    """Encode text that may carry lone surrogates (os.environ's undecodable bytes, odd request headers).

    A plain ``.encode()`` would raise UnicodeEncodeError there, and only VerificationError may escape.
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --------------------------------------------------------------------------- presets


def _verify_stripe(
    config: VerifyConfig, keys: list[bytes], body: bytes, headers: Mapping[str, str], now: float
) -> None:
    value = _header(headers, "Stripe-Signature")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in value.split(","):
        key, sep, part = item.strip().partition("=")
        if not sep:
            raise VerificationError("Stripe-Signature is malformed: expected t=<timestamp>,v1=<signature>")
        if key == "t":
            timestamps.append(part)
        elif key == "v1":
            signatures.append(part)
    if len(timestamps) != 1:
        raise VerificationError("Stripe-Signature is malformed: expected exactly one t=<timestamp>")
    timestamp = _timestamp(timestamps[0], "Stripe-Signature t=")
    if not signatures:
        raise VerificationError("Stripe-Signature has no v1 signature")
    candidates = [sig for s in signatures if (sig := _unhex(s, 32)) is not None]
    if not candidates:
        raise VerificationError("Stripe-Signature is malformed: v1 is not 64 hex digits")
    _check_tolerance(timestamp, now, _tolerance(config))
    _require_match(keys, f"{timestamps[0]}.".encode() + body, candidates)


def _sign_stripe(config: VerifyConfig, key: bytes, body: bytes, now: float, msg_id: str) -> dict[str, str]:
    ts = str(int(now))
    return {"Stripe-Signature": f"t={ts},v1={_mac(key, f'{ts}.'.encode() + body).hex()}"}


def _verify_github(
    config: VerifyConfig, keys: list[bytes], body: bytes, headers: Mapping[str, str], now: float
) -> None:
    scheme, sep, value = _header(headers, "X-Hub-Signature-256").partition("=")
    signature = _unhex(value, 32) if scheme == "sha256" and sep else None
    if signature is None:
        raise VerificationError("X-Hub-Signature-256 is malformed: expected sha256=<64 hex digits>")
    _require_match(keys, body, [signature])


def _sign_github(config: VerifyConfig, key: bytes, body: bytes, now: float, msg_id: str) -> dict[str, str]:
    return {"X-Hub-Signature-256": f"sha256={_mac(key, body).hex()}"}


def _verify_shopify(
    config: VerifyConfig, keys: list[bytes], body: bytes, headers: Mapping[str, str], now: float
) -> None:
    signature = _unb64(_header(headers, "X-Shopify-Hmac-Sha256"), 32)
    if signature is None:
        raise VerificationError("X-Shopify-Hmac-Sha256 is malformed: expected the base64 of a 32-byte HMAC-SHA256")
    _require_match(keys, body, [signature])


def _sign_shopify(config: VerifyConfig, key: bytes, body: bytes, now: float, msg_id: str) -> dict[str, str]:
    return {"X-Shopify-Hmac-Sha256": base64.b64encode(_mac(key, body)).decode()}


def _verify_slack(config: VerifyConfig, keys: list[bytes], body: bytes, headers: Mapping[str, str], now: float) -> None:
    scheme, sep, value = _header(headers, "X-Slack-Signature").partition("=")
    signature = _unhex(value, 32) if scheme == "v0" and sep else None
    if signature is None:
        raise VerificationError("X-Slack-Signature is malformed: expected v0=<64 hex digits>")
    raw_ts = _header(headers, "X-Slack-Request-Timestamp")
    _check_tolerance(_timestamp(raw_ts, "X-Slack-Request-Timestamp"), now, _tolerance(config))
    _require_match(keys, f"v0:{raw_ts}:".encode() + body, [signature])


def _sign_slack(config: VerifyConfig, key: bytes, body: bytes, now: float, msg_id: str) -> dict[str, str]:
    ts = str(int(now))
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={_mac(key, f'v0:{ts}:'.encode() + body).hex()}"}


def _verify_standard(
    config: VerifyConfig, keys: list[bytes], body: bytes, headers: Mapping[str, str], now: float
) -> None:
    # Svix sends the same scheme under svix-* names; take one set whole rather than mixing the two.
    prefix = "webhook" if "webhook-signature" in headers or "svix-signature" not in headers else "svix"
    fallback = f" (or {'svix' if prefix == 'webhook' else 'webhook'}-*)"
    try:
        msg_id = _header(headers, f"{prefix}-id")
        raw_ts = _header(headers, f"{prefix}-timestamp")
        value = _header(headers, f"{prefix}-signature")
    except VerificationError as exc:
        raise VerificationError(f"{exc}{fallback}") from None
    timestamp = _timestamp(raw_ts, f"{prefix}-timestamp")
    candidates: list[bytes] = []
    versions = 0
    for entry in value.split():
        version, sep, encoded = entry.partition(",")
        if version != "v1" or not sep:
            continue  # other schemes (v1a asymmetric signatures) may appear alongside; they are not ours
        versions += 1
        if (sig := _unb64(encoded, 32)) is not None:
            candidates.append(sig)
    if not versions:
        raise VerificationError(f"{prefix}-signature has no v1,<base64> signature")
    if not candidates:
        raise VerificationError(f"{prefix}-signature is malformed: v1 is not the base64 of a 32-byte HMAC-SHA256")
    _check_tolerance(timestamp, now, _tolerance(config))
    _require_match(keys, _utf8(f"{msg_id}.{raw_ts}.") + body, candidates)


def _sign_standard(config: VerifyConfig, key: bytes, body: bytes, now: float, msg_id: str) -> dict[str, str]:
    ts = str(int(now))
    signature = base64.b64encode(_mac(key, _utf8(f"{msg_id}.{ts}.") + body)).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{signature}"}


def _hmac_message(config: VerifyConfig, timestamp: str | None, body: bytes) -> bytes:
    # With a timestamp header the timestamp is bound into the MAC as "<ts>.<body>", as Stripe does;
    # otherwise a captured request could be replayed with a fresh timestamp.
    return body if timestamp is None else f"{timestamp}.".encode() + body


def _verify_hmac(config: VerifyConfig, keys: list[bytes], body: bytes, headers: Mapping[str, str], now: float) -> None:
    name = str(config.options["header"])
    algorithm = str(config.options.get("algorithm", "sha256"))
    encoding = str(config.options.get("encoding", "hex"))
    prefix = str(config.options.get("prefix", ""))
    value = _header(headers, name)
    if not value.startswith(prefix):
        raise VerificationError(f"{name} is malformed: expected the prefix {prefix!r}")
    value = value[len(prefix) :]
    size = ALGORITHMS[algorithm]().digest_size
    signature = _unhex(value, size) if encoding == "hex" else _unb64(value, size)
    if signature is None:
        raise VerificationError(f"{name} is malformed: expected the {encoding} of a {size}-byte {algorithm} HMAC")
    raw_ts: str | None = None
    if "timestamp_header" in config.options:
        ts_name = str(config.options["timestamp_header"])
        raw_ts = _header(headers, ts_name)
        _check_tolerance(_timestamp(raw_ts, ts_name), now, _tolerance(config))
    _require_match(keys, _hmac_message(config, raw_ts, body), [signature], algorithm)


def _sign_hmac(config: VerifyConfig, key: bytes, body: bytes, now: float, msg_id: str) -> dict[str, str]:
    algorithm = str(config.options.get("algorithm", "sha256"))
    out: dict[str, str] = {}
    ts: str | None = None
    if "timestamp_header" in config.options:
        ts = str(int(now))
        out[str(config.options["timestamp_header"])] = ts
    mac = _mac(key, _hmac_message(config, ts, body), algorithm)
    encoded = mac.hex() if config.options.get("encoding", "hex") == "hex" else base64.b64encode(mac).decode()
    out[str(config.options["header"])] = str(config.options.get("prefix", "")) + encoded
    return out


_Verifier = Callable[[VerifyConfig, list[bytes], bytes, Mapping[str, str], float], None]
_Signer = Callable[[VerifyConfig, bytes, bytes, float, str], dict[str, str]]

_MAC_PRESETS: dict[str, tuple[_Verifier, _Signer]] = {
    "github": (_verify_github, _sign_github),
    "hmac": (_verify_hmac, _sign_hmac),
    "shopify": (_verify_shopify, _sign_shopify),
    "slack": (_verify_slack, _sign_slack),
    "standard-webhooks": (_verify_standard, _sign_standard),
    "stripe": (_verify_stripe, _sign_stripe),
}


def _verify_token(
    config: VerifyConfig, secrets: list[bytes], headers: Mapping[str, str], query: Mapping[str, str]
) -> None:
    if "query" in config.options:
        name = str(config.options["query"])
        value = query.get(name)
        if value is None:
            raise VerificationError(f"missing query parameter {name!r}")
    else:
        value = _header(headers, str(config.options["header"]))
    given = _utf8(value)
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given, secret)
    if not matched:
        raise VerificationError(f"token does not match (checked {_count(len(secrets), 'secret')})")


def _verify_basic(config: VerifyConfig, headers: Mapping[str, str], env: Mapping[str, str]) -> None:
    username, password = _basic_credentials(config, env)
    scheme, _, credentials = _header(headers, "Authorization").partition(" ")
    if scheme.lower() != "basic":
        raise VerificationError("Authorization is not HTTP basic credentials")
    malformed = VerificationError("Authorization is malformed: expected Basic <base64 of username:password>")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except ValueError:  # binascii.Error, non-ASCII text or UnicodeDecodeError
        raise malformed from None
    given_user, sep, given_password = decoded.partition(":")
    if not sep:
        raise malformed
    # Both comparisons always run, so timing does not tell whether the username was right.
    user_ok = hmac.compare_digest(_utf8(given_user), _utf8(username))
    password_ok = hmac.compare_digest(_utf8(given_password), _utf8(password))
    if not (user_ok & password_ok):
        raise VerificationError("username or password does not match")


# --------------------------------------------------------------------------- public entry points


def verify_request(
    config: VerifyConfig,
    *,
    body: bytes,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    env: Mapping[str, str],
    now: float,
) -> None:
    """Return None when the request verifies; raise VerificationError (401) or VerificationUnavailable (503).

    ``headers`` must have lowercase keys. Secrets are resolved first: a flow whose secret is not set answers
    503 even to a well-signed request, so the provider retries once the operator sets it. With several
    secrets (rotation) the ones that resolve are used and any may match. Timestamps are checked both ways:
    too old is a replay, too far ahead is a forger or a broken clock.
    """
    if config.provider == "basic":
        _verify_basic(config, headers, env)
        return
    keys = _keys(config, env)
    if config.provider == "token":
        _verify_token(config, keys, headers, query)
        return
    verifier, _ = _MAC_PRESETS[config.provider]
    verifier(config, keys, body, headers, now)


def sign(
    config: VerifyConfig, body: bytes, *, env: Mapping[str, str], now: float, msg_id: str = "msg_hookline"
) -> dict[str, str]:
    """Headers that make ``body`` verify at time ``now`` with the first secret; for ``hookline send`` and tests.

    Header names come back as the provider spells them (lowercase them before :func:`verify_request`).
    Only the first listed secret is used, so a rotation list signs with its first entry; when it does not
    resolve, VerificationUnavailable is raised rather than silently signing with another. A ``token`` taken
    from a query parameter cannot be carried in headers: that raises ValueError, since returning no headers
    would produce a request that fails with a confusing 401.
    """
    if config.provider == "basic":
        username, password = _basic_credentials(config, env)
        return {"Authorization": "Basic " + base64.b64encode(_utf8(f"{username}:{password}")).decode()}
    if config.provider == "token":
        if "query" in config.options:
            raise ValueError(
                f"the token goes in the query parameter {config.options['query']!r}, not a header; add it to the URL"
            )
        token, reason = _resolve_one(config.secrets[0] if config.secrets else "", env)
        if token is None:
            raise _unavailable([reason])
        return {str(config.options["header"]): token}
    (key,) = _keys(config, env, first_only=True)
    _, signer = _MAC_PRESETS[config.provider]
    return signer(config, key, body, now, msg_id)


def secret_fields(config: VerifyConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(lowercase header names, query parameter names) whose values are secrets and must be redacted before storing.

    Signature headers are not listed: they are MACs of this one body and reveal nothing reusable.
    """
    if config.provider == "basic":
        return ("authorization",), ()
    if config.provider == "token":
        if "query" in config.options:
            return (), (str(config.options["query"]),)
        return (str(config.options["header"]).lower(),), ()
    return (), ()


def hint(config: VerifyConfig) -> str:
    """One line for the UI saying which header(s) the provider sends, so a failing setup can be diagnosed."""
    tolerance = f", {_tolerance(config)} s tolerance"
    options = config.options
    if config.provider == "stripe":
        text = f"Stripe signs with the Stripe-Signature header (t=…,v1=…){tolerance}"
    elif config.provider == "github":
        text = "GitHub signs with the X-Hub-Signature-256 header (sha256=…)"
    elif config.provider == "shopify":
        text = "Shopify signs with the X-Shopify-Hmac-Sha256 header (base64 HMAC-SHA256 of the body)"
    elif config.provider == "slack":
        text = f"Slack signs with the X-Slack-Signature (v0=…) and X-Slack-Request-Timestamp headers{tolerance}"
    elif config.provider == "standard-webhooks":
        text = (
            "Standard Webhooks signs with the webhook-id, webhook-timestamp and webhook-signature (v1,…) headers"
            f" (svix-* accepted too){tolerance}"
        )
    elif config.provider == "hmac":
        algorithm = str(options.get("algorithm", "sha256")).upper().replace("SHA", "SHA-")
        signed = "the body"
        if "timestamp_header" in options:
            signed = f"'<{options['timestamp_header']}>.<body>'"
        prefix = f" after the prefix {options['prefix']!r}" if options.get("prefix") else ""
        encoding = options.get("encoding", "hex")
        text = f"HMAC-{algorithm} ({encoding}) of {signed} in the {options['header']} header{prefix}"
        if "timestamp_header" in options:
            text += tolerance
    elif config.provider == "token":
        if "query" in options:
            text = f"a static token in the {options['query']!r} query parameter"
        else:
            text = f"a static token in the {options['header']} header"
    else:
        text = "HTTP basic auth in the Authorization header"
    if len(config.secrets) > 1:
        text += f"; {len(config.secrets)} secrets accepted (rotation)"
    return text
