"""What a verification preset is made of, and the checks every preset shares.

A :class:`Preset` declares its fields (help, defaults, which hold secrets), ``verify`` and ``sign``, where its
secrets travel in a request (so ingress redacts them), the one-line ``hint`` shown when verification fails,
how its form bodies become the event, and an example. :func:`register` refuses a preset that has secret
fields but does not say where they travel, so redaction cannot be forgotten.
A provider that sends one HMAC in one header is a :class:`HeaderMac` and one :func:`mac_preset` call.

Everything here is pure: the request, the environment and the time are passed in. Comparisons are
constant-time on raw bytes, and no message ever contains a secret or an expected signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from engine import envrefs
from engine.errors import MissingEnvError, VerificationError, VerificationUnavailable

DEFAULT_TOLERANCE = 300.0
"""Seconds a signed timestamp may differ from now, either way; what Stripe, Slack and Standard Webhooks use."""

ALGORITHMS: dict[str, Callable[[], Any]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}

# RFC 9110 token characters: anything else cannot be a header name.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class VerifyConfig:
    """A validated ``trigger.verify`` mapping; build it with ``engine.presets.parse_verify``.

    ``secrets`` keeps the raw strings (with their ``${VAR}`` references) so values are read per request.
    ``options`` holds every other key, with defaults filled in (``tolerance`` in seconds).
    """

    provider: str
    secrets: tuple[str, ...]
    options: Mapping[str, Any]


@dataclass(frozen=True)
class Request:
    """An inbound request as received: what a preset may sign over.

    ``url`` is scheme://host/path?query as this process saw it (behind a proxy, see the ``url`` option);
    ``headers`` have lowercase names; ``form`` holds the parsed pairs of a form-encoded body, in order.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    form: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(cls, *, body: bytes, headers: Mapping[str, str], method: str = "POST", url: str = "",
              query: Mapping[str, str] | None = None) -> Request:
        """Lowercase the header names, parse a form body, and append ``query`` to ``url`` when given."""
        lowered = {k.lower(): v for k, v in headers.items()}
        if query:
            parts = urlsplit(url)
            pairs = parse_qsl(parts.query, keep_blank_values=True) + list(query.items())
            url = urlunsplit(parts._replace(query=urlencode(pairs, errors="surrogatepass")))
        form: tuple[tuple[str, str], ...] = ()
        if lowered.get("content-type", "").split(";", 1)[0].strip().lower() == _FORM:
            try:
                form = tuple(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            except UnicodeDecodeError:
                form = ()
        return cls(method=method.upper(), url=url, headers=lowered, body=body, form=form)

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, first value of each name (as Flask's ``request.args.to_dict()``)."""
        out: dict[str, str] = {}
        for key, value in parse_qsl(urlsplit(self.url).query, keep_blank_values=True):
            out.setdefault(key, value)
        return out


@dataclass(frozen=True)
class Field:
    """One key of a preset's ``trigger.verify`` mapping besides ``provider``.

    ``kind``: ``secret`` (a string or a list while rotating; becomes ``VerifyConfig.secrets``), ``str``
    (non-empty), ``text`` (any string), ``header`` (an HTTP header name), ``enum`` (one of ``choices``, any
    case), ``duration`` (positive, see engine.units) or ``url``. ``secret`` marks values that must never be
    stored; ``what`` completes the "required: ..." message.
    """

    name: str
    kind: str
    help: str
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    secret: bool = False
    what: str = ""


Carriers = tuple[tuple[str, ...], tuple[str, ...]]
"""(lowercase header names, query parameter names) whose values are secrets."""

Verifier = Callable[[Request, VerifyConfig, Mapping[str, str], float], None]
Signer = Callable[[Request, VerifyConfig, Mapping[str, str], float, str], dict[str, str]]


def nothing_sent(config: VerifyConfig) -> Carriers:
    """For presets that send a MAC of the request, never the secret itself."""
    return (), ()


@dataclass(frozen=True)
class Preset:
    """One ``trigger.verify.provider``: declared once, read by the loader, the ingress, the docs and the tests."""

    name: str
    title: str  # the provider as people spell it: "GitHub", "Standard Webhooks"
    summary: str  # one or two sentences for the reference (Markdown)
    fields: tuple[Field, ...]
    verify: Verifier
    sign: Signer
    hint: Callable[[VerifyConfig], str]
    example: Mapping[str, Any]
    carriers: Callable[[VerifyConfig], Carriers] | None = None  # required when a field is secret
    check: Callable[[Mapping[str, Any], dict[str, Any], list[tuple[str, str]]], None] | None = None
    key: Callable[[str], bytes | None] | None = None  # secret text -> HMAC key; None: its UTF-8 bytes
    key_format: str = ""  # what `key` accepts, for messages: "whsec_ followed by base64"
    form_event: Callable[[dict[str, Any]], Any] | None = None  # form mapping -> event; None: the mapping
    binds_body: bool = True  # False when any body verifies (static tokens, basic auth)

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


REGISTRY: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    """Add a preset; ValueError when one of its secret fields could travel unredacted."""
    if any(f.secret for f in preset.fields) and preset.carriers is None:
        raise ValueError(f"preset {preset.name} has secret fields but no carriers: say which headers or query "
                         "parameters carry them (nothing_sent when only a MAC is sent)")
    if preset.name in REGISTRY:
        raise ValueError(f"preset {preset.name} is registered twice")
    REGISTRY[preset.name] = preset
    return preset


# --------------------------------------------------------------------------- secrets


def utf8(text: str) -> bytes:
    """Encode text that may carry lone surrogates (os.environ's undecodable bytes, odd request headers).

    A plain ``.encode()`` would raise UnicodeEncodeError there, and only VerificationError may escape.
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def resolve_one(raw: str, env: Mapping[str, str]) -> tuple[str | None, str]:
    """(value, "") or (None, reason the value is unusable); the reason names variables, never values."""
    try:
        value = envrefs.expand(raw, env)
    except MissingEnvError as exc:
        return None, str(exc)
    if value == "":
        names = [ref.name for ref in envrefs.refs(raw)]
        return None, f"the secret from {', '.join(names)} is empty" if names else "the secret is empty"
    return value, ""


def unavailable(reasons: Sequence[str], what: str = "secret") -> VerificationUnavailable:
    detail = "; ".join(dict.fromkeys(reasons)) or "no secret is listed"
    return VerificationUnavailable(f"verification {what} for flow is not configured: {detail}")


def keys(config: VerifyConfig, env: Mapping[str, str], *, first_only: bool = False) -> list[bytes]:
    """Keys of the secrets that resolve (the preset's ``key`` decodes them); VerificationUnavailable when none does."""
    preset = REGISTRY[config.provider]
    found: list[bytes] = []
    reasons: list[str] = []
    for raw in config.secrets[:1] if first_only else config.secrets:
        value, reason = resolve_one(raw, env)
        if value is None:
            reasons.append(reason)
            continue
        key = preset.key(value) if preset.key else utf8(value)
        if key is None:
            reasons.append(f"a secret is not {preset.key_format}")
        else:
            found.append(key)
    if not found:
        raise unavailable(reasons)
    return found


def signed_url(request: Request, config: VerifyConfig, env: Mapping[str, str]) -> str:
    """The URL the provider signed: the ``url`` option (``${VAR}`` resolved now) or the URL as received.

    A configured URL without a query string gets the received one appended, so parameters the provider
    adds per request (Twilio's ``bodySHA256``) still count.
    """
    configured = config.options.get("url")
    if configured is None:
        if not request.url:
            raise VerificationUnavailable(f"{config.provider} signs the request URL, and none was given")
        return request.url
    try:
        url = envrefs.expand(str(configured), env)
    except MissingEnvError as exc:
        raise unavailable([str(exc)], "url") from None
    received = urlsplit(request.url).query
    if "?" not in url and received:
        url = f"{url}?{received}"
    return url


# --------------------------------------------------------------------------- checks shared by presets


def header(request: Request, name: str) -> str:
    value = request.headers.get(name.lower())
    if value is None:
        raise VerificationError(f"missing {name} header")
    value = value.strip()
    if not value:
        raise VerificationError(f"empty {name} header")
    return value


def timestamp(value: str, what: str) -> int:
    if not _TIMESTAMP.fullmatch(value):
        raise VerificationError(f"{what} is malformed: expected a Unix timestamp in seconds")
    return int(value)


def tolerance(config: VerifyConfig) -> float:
    return float(config.options.get("tolerance", DEFAULT_TOLERANCE))


def check_tolerance(stamp: int, now: float, config: VerifyConfig) -> None:
    """Reject replays (too old) and clocks or forgers far ahead (too far in the future)."""
    limit = tolerance(config)
    age = now - stamp
    if age > limit:
        raise VerificationError(f"timestamp outside the {limit:g} s tolerance ({int(age)} s old)")
    if -age > limit:
        raise VerificationError(f"timestamp outside the {limit:g} s tolerance ({int(-age)} s in the future)")


def tolerance_hint(config: VerifyConfig) -> str:
    return f", {tolerance(config):g} s tolerance"


def unhex(value: str, size: int) -> bytes | None:
    # bytes.fromhex alone would accept spaces between bytes.
    if len(value) != 2 * size or not _HEX.fullmatch(value):
        return None
    return bytes.fromhex(value)


def unb64(value: str, size: int) -> bytes | None:
    try:
        decoded = base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return None
    return decoded if len(decoded) == size else None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def mac(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, message, ALGORITHMS[algorithm]).digest()


def require_match(keys: Sequence[bytes], messages: Sequence[bytes], candidates: Sequence[bytes],
                  algorithm: str = "sha256") -> None:
    """Compare every key and message against every candidate without stopping early, so timing says nothing."""
    matched = False
    for key in keys:
        for message in messages:
            expected = mac(key, message, algorithm)
            for candidate in candidates:
                matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise VerificationError(f"no signature matches (checked {count(len(keys), 'secret')})")


def equal(given: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(given, expected)


SECRET = Field("secret", "secret", "the signing secret: a string, or a list of strings while rotating (any may match); "
               "usually `${VAR}`", required=True, secret=True)
TOLERANCE = Field("tolerance", "duration", "how far the signed timestamp may be from now, either way: seconds or a "
                  "duration (`30s`, `5m`, `1h`)", default=DEFAULT_TOLERANCE)
URL = Field("url", "url", "the public URL the provider signs, as entered in its settings (`${VAR}` allowed); "
            "default: the URL as received, which differs behind a proxy that rewrites scheme, host or path. "
            "Without a `?` the received query string is appended")



def url_hint(config: VerifyConfig) -> str:
    """The signed URL as a hint names it: the configured ``url`` option, or the URL as received."""
    return f"the URL {config.options['url']}" if "url" in config.options else "the URL as received"


# --------------------------------------------------------------------------- one HMAC in one header


@dataclass(frozen=True)
class HeaderMac:
    """An HMAC of the body in one header, optionally bound to a timestamp header or the URL: what most providers send.

    ``signs`` is what precedes the body in the MAC, with ``{timestamp}`` (the value of ``timestamp_header``)
    and ``{url}`` (see :func:`signed_url`) filled in. A malformed header is named with the form it must
    take ("sha256=<64 hex digits>"); with ``explain`` (the generic preset, whose form the flow chose) the
    message says whether the prefix or the MAC is wrong.
    """

    header: str
    prefix: str = ""
    encoding: str = "hex"
    algorithm: str = "sha256"
    timestamp_header: str | None = None
    signs: str = ""
    explain: bool = False

    def verify(self, request: Request, config: VerifyConfig, env: Mapping[str, str], now: float) -> None:
        secrets = keys(config, env)
        value = header(request, self.header)
        size = ALGORITHMS[self.algorithm]().digest_size
        if not value.startswith(self.prefix):
            raise self._malformed(f"the prefix {self.prefix!r}")
        value = value[len(self.prefix) :]
        signature = unhex(value, size) if self.encoding == "hex" else unb64(value, size)
        if signature is None:
            raise self._malformed(f"the {self.encoding} of a {size}-byte {self.algorithm} HMAC")
        stamp = None
        if self.timestamp_header is not None:
            stamp = header(request, self.timestamp_header)
            check_tolerance(timestamp(stamp, self.timestamp_header), now, config)
        require_match(secrets, [self._message(request, config, env, stamp)], [signature], self.algorithm)

    def sign(self, request: Request, config: VerifyConfig, env: Mapping[str, str], now: float,
             msg_id: str) -> dict[str, str]:
        (key,) = keys(config, env, first_only=True)
        out: dict[str, str] = {}
        stamp = None
        if self.timestamp_header is not None:
            stamp = out[self.timestamp_header] = str(int(now))
        digest = mac(key, self._message(request, config, env, stamp), self.algorithm)
        out[self.header] = self.prefix + (digest.hex() if self.encoding == "hex" else b64(digest))
        return out

    def _message(self, request: Request, config: VerifyConfig, env: Mapping[str, str], stamp: str | None) -> bytes:
        if not self.signs:
            return request.body
        url = signed_url(request, config, env) if "{url}" in self.signs else ""
        return utf8(self.signs.format(timestamp=stamp, url=url)) + request.body

    def _malformed(self, what: str) -> VerificationError:
        if not self.explain:
            size = ALGORITHMS[self.algorithm]().digest_size
            hexed, based = f"{self.prefix}<{2 * size} hex digits>", f"the base64 of a {size}-byte HMAC-{self.algorithm.upper()}"
            what = hexed if self.encoding == "hex" else based
        return VerificationError(f"{self.header} is malformed: expected {what}")


def mac_preset(name: str, title: str, scheme: HeaderMac, *, summary: str, hint: str, example: Mapping[str, Any],
               form_event: Callable[[dict[str, Any]], Any] | None = None) -> Preset:
    """Register the preset of a provider that sends a :class:`HeaderMac`: such a provider's file is this one call.

    The fields follow from the scheme (``tolerance`` with a timestamp, ``url`` when the URL is signed), and
    ``hint`` may name ``{tolerance}`` and ``{url}``, filled in from the flow's options.
    """
    fields = (SECRET,) + ((TOLERANCE,) if scheme.timestamp_header else ()) + ((URL,) if "{url}" in scheme.signs else ())

    def describe(config: VerifyConfig) -> str:
        return hint.format(tolerance=tolerance_hint(config), url=url_hint(config))

    return register(Preset(name=name, title=title, summary=summary, fields=fields, verify=scheme.verify, sign=scheme.sign,
                           hint=describe, example=example, carriers=nothing_sent, form_event=form_event))
