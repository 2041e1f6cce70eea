"""``http: {...}``: one outbound request on the injected httpx.Client.

Classification decides retries: connection errors, timeouts, 5xx, 408 and 429 are retryable
(Retry-After honoured); any other status outside ``success`` fails the run at once. Every
request carries an ``Idempotency-Key`` stable across retries of this step in this run (I6).
A request that can never be sent (a header with a control character, a URL that is not absolute)
fails at once, never retried. Link-local targets are always refused; see ``HostVerdicts`` for
how often a host name is resolved to check that.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from engine.connections import Outbound
from engine.errors import HttpStepError, StepError
from engine.outbound import LinkLocalRefused, link_local_refusal, literal
from engine.steps import Field, Outcome, RetryPolicy, StepContext, StepType, register
from engine.templating import EnvText, Expr, Jinja, JsonPath, List_, Literal, Mapping_, Placeholder, RenderContext

if TYPE_CHECKING:
    from engine.connections.runtime import Prepared

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
RETRYABLE_STATUSES = frozenset({408, 429})
HOST_VERDICT_TTL_S = 5.0  # how long a resolved host's link-local verdict is trusted
HOST_VERDICT_MAX_HOSTS = 1024
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # every control character but HTAB (RFC 9110 5.5)
CONTROL_NAMES = {"\n": "newline", "\r": "carriage return", "\x00": "NUL"}

RETRY_FIELDS = (
    Field("max_attempts", "int", "Attempts in all, the first included.", default=3, example="6"),
    Field("backoff", "enum", "Delay growth between attempts.", default="exponential", choices=("exponential", "fixed")),
    Field("initial", "duration", "Ceiling of the first delay (full jitter picks in [0, ceiling]).", default=1.0,
          example="2s"),
    Field("max_delay", "duration", "Largest ceiling a delay may reach.", default=300.0, example="10m"),
)

LIMIT_FIELDS = (
    Field("rate", "str", "Requests per second to this host, shared by all workers (e.g. 10/s, 600/m).", example="10/s"),
    Field("burst", "int", "Token bucket size for `rate` (default: max(1, rate)).", example="20"),
    Field("concurrency", "int", "Requests in flight to this host at once, across all workers.", example="5"),
    Field("breaker_failures", "int", "Consecutive failures (connection, timeout, 5xx) that open the circuit.",
          example="5"),
    Field("breaker_cooldown", "duration", "How long the circuit stays open before one probe request.", example="30s"),
)

FIELDS = (
    Field("method", "enum", "HTTP method.", default="POST", choices=METHODS),
    Field("url", "template", "Absolute http(s) URL; templates and ${VAR} allowed.", required=True,
          example="${CRM_URL}/contacts"),
    Field("headers", "template", "Request headers (mapping); values templated.", example="{Authorization: Bearer ${TOKEN}}"),
    Field("query", "template", "Query parameters (mapping); values templated."),
    Field("json", "template", "JSON body: any value, templates inside."),
    Field("form", "template", "Form-encoded body (mapping)."),
    Field("body", "template", "Raw text body."),
    Field("timeout", "duration", "Timeout for connect, read and write; default HOOKLINE_HTTP_TIMEOUT_S.", example="10s"),
    Field("retry", "fields", "Retry policy for retryable failures.", fields=RETRY_FIELDS,
          example="{max_attempts: 6, backoff: exponential, initial: 2s, max_delay: 10m}"),
    Field("success", "statuses", "Statuses that count as success.", default=("2xx",), example="[200, 201, 409]"),
    Field("limits", "fields", "Protection of the origin called (scheme://host:port); overrides HOOKLINE_DESTINATIONS for it.",
          fields=LIMIT_FIELDS, example="{rate: 10/s, concurrency: 5}"),
    Field("allow_hosts", "hosts", "Hosts allowed when the URL's host comes from a template (wildcards allowed).",
          example="['*.myshopify.com']"),
    Field("connection", "str", "A connection from connections.yaml that authenticates or signs this request.",
          example="crm"),
    Field("redact", "template", "JSONPaths into the response body whose values are secrets: never recorded.",
          example="[$.access_token]"),
)


@dataclass(frozen=True)
class HttpConfig:
    method: str
    url: Expr
    headers: Expr | None
    query: Expr | None
    json: Expr | None
    form: Expr | None
    body: Expr | None
    timeout: float | None
    retry: RetryPolicy
    success: tuple[tuple[int, int], ...]
    allow_hosts: tuple[str, ...]
    limits: dict[str, Any]
    connection: str | None = None
    redact: tuple[JsonPath, ...] = ()


def parse_statuses(value: Any) -> tuple[tuple[int, int], ...]:
    """``[200, "2xx", "400-404"]`` -> ranges; raises ValueError."""
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for item in items:
        text = str(item).strip().lower()
        if len(text) == 3 and text.endswith("xx") and text[0].isdigit():
            out.append((int(text[0]) * 100, int(text[0]) * 100 + 99))
        elif "-" in text:
            lo, hi = text.split("-", 1)
            out.append((int(lo), int(hi)))
        else:
            out.append((int(text), int(text)))
    return tuple(out)


def build(parsed: dict[str, Any]) -> HttpConfig:
    bodies = [k for k in ("json", "form", "body") if parsed.get(k) is not None]
    if (parsed.get("limits") or {}).get("rate") is not None:
        from engine.destinations import parse_rate

        parse_rate(parsed["limits"]["rate"])
    if len(bodies) > 1:
        raise ValueError(f"use only one of json, form and body (got {', '.join(bodies)})")
    url = parsed.get("url")
    if isinstance(url, Literal) and url.value is not None:  # None: its compile error is already reported
        parts = urlsplit(str(url.value))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an absolute http(s) URL, got {url.value!r}")
    headers = parsed.get("headers")
    if isinstance(headers, Mapping_):  # names are never templated: a bad one is the flow's fault, found at load
        bad = [str(name) for name, _ in headers.items if not HEADER_NAME.fullmatch(str(name))]
        if bad:
            raise ValueError(f"headers: {bad[0][:100]!r} is not a valid HTTP header name")
    retry = parsed.get("retry") or {}
    return HttpConfig(
        method=str(parsed.get("method") or "POST").upper(),
        url=parsed["url"],
        headers=parsed.get("headers"),
        query=parsed.get("query"),
        json=parsed.get("json"),
        form=parsed.get("form"),
        body=parsed.get("body"),
        timeout=parsed.get("timeout"),
        retry=RetryPolicy(**{k: v for k, v in retry.items() if v is not None}),
        success=parsed.get("success") or ((200, 299),),
        allow_hosts=tuple(parsed.get("allow_hosts") or ()),
        limits={k: v for k, v in (parsed.get("limits") or {}).items() if v is not None},
        connection=parsed.get("connection"),
        redact=_redact_paths(parsed.get("redact")),
    )


def _redact_paths(expr: Expr | None) -> tuple[JsonPath, ...]:
    """``redact: [$.access_token]`` compiles (as a template value) to JSONPaths; anything else is refused."""
    items = expr.items if isinstance(expr, List_) else () if expr is None else (expr,)
    if not all(isinstance(i, JsonPath) or (isinstance(i, Literal) and i.value is None) for i in items):
        raise ValueError("redact: list JSONPaths into the response body, e.g. [$.access_token]")
    return tuple(i for i in items if isinstance(i, JsonPath))


def _static_prefix(expr: Expr, ctx: StepContext) -> str | None:
    """The part of the URL the flow author fixed (literals and ${VAR}s before any template), or None."""
    if isinstance(expr, Literal):
        return str(expr.value)
    if isinstance(expr, EnvText):
        return str(expr.render(ctx.render))
    if isinstance(expr, Jinja) and not expr.native:
        # literal text and ${VAR}s up to the first real template expression
        values = [ctx.render.env_value(r, expr.where) for r in expr.env_refs]
        out, rest = "", expr.source.split("{%", 1)[0]
        while True:
            idx = rest.find("{{")
            if idx < 0:
                return out + rest
            out += rest[:idx]
            end = rest.find("}}", idx)
            inner = rest[idx + 2 : end].strip() if end >= 0 else ""
            if not (inner.startswith("_env[") and inner.endswith("]")):
                return out
            out += values[int(inner[5:-1])]
            rest = rest[end + 2 :]
    return None


def check_url(url: str, cfg: HttpConfig, ctx: StepContext) -> None:
    """Refuse non-http(s) URLs, link-local targets, and hosts taken from event data unless allowed."""
    try:
        sent = httpx.URL(url)
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except (httpx.InvalidURL, ValueError) as exc:
        raise StepError(f"invalid URL {url[:200]!r}: {exc}") from None
    # both parses must agree it is absolute: urlsplit strips leading whitespace, httpx does not (and would then
    # fail at send time with an UnsupportedProtocol that looked like a retryable connection error)
    if parts.scheme not in ("http", "https") or not parts.hostname or sent.scheme not in ("http", "https") \
            or not sent.raw_host:
        raise StepError(f"url must be an absolute http(s) URL, got {url[:200]!r}")
    host = parts.hostname.lower()
    prefix = _static_prefix(cfg.url, ctx)
    fixed = prefix is not None and "://" in prefix and (
        prefix == url or any(c in prefix.split("://", 1)[1] for c in "/?#") or prefix.rstrip("/") == url.rstrip("/")
    )
    if not fixed:
        allowed = cfg.allow_hosts + ctx.options.allow_hosts
        if not any(fnmatch.fnmatch(host, pattern.lower()) for pattern in allowed):
            raise StepError(
                f"host {host!r} comes from a template; add it to this step's allow_hosts "
                "(or HOOKLINE_ALLOW_HOSTS) to call it"
            )
    # the name httpx connects to: for a non-ASCII host that is its IDNA 2008 form, which may differ from the
    # IDNA 2003 form socket.getaddrinfo would make of the Unicode name (faß.example: xn--fa-hia vs fass)
    _refuse_link_local(sent.raw_host.decode("ascii"))


class HostVerdicts:
    """Link-local verdicts per host name, each trusted for ``ttl`` seconds; thread-safe, at most ``max_hosts``.

    Every call used to resolve its host once for this check and once more in httpx: a blocking lookup of
    1-50 ms through a resolver (up to 250 ms for a name that does not resolve) on each request. With this
    cache a worker resolves each host about once per ``ttl``: threads that miss at the same moment each
    resolve (the lock is never held during a lookup). Both verdicts are kept: refused (the message) and
    allowed (None). A name that does not resolve is not cached at all: it is looked up again next time, so
    a name that starts resolving, perhaps to a link-local address, is judged on its new answer at once.
    When full, expired entries go first, then the oldest.
    """

    def __init__(self, ttl: float = HOST_VERDICT_TTL_S, max_hosts: int = HOST_VERDICT_MAX_HOSTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_hosts = max_hosts
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, str | None]] = {}  # host -> (expires at, refusal or None)

    def verdict(self, host: str, decide: Callable[[str], str | None]) -> str | None:
        """The refusal message for ``host``, or None when it is allowed; ``decide`` runs on a miss.

        Whatever ``decide`` raises (OSError for a name that does not resolve) propagates and nothing is cached.
        """
        with self._lock:
            entry = self._entries.get(host)
            if entry is not None and entry[0] > self.clock():
                return entry[1]
        refusal = decide(host)
        with self._lock:
            now = self.clock()
            self._entries.pop(host, None)  # re-inserted last: dict order is age order
            if len(self._entries) >= self.max_hosts:
                for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                    del self._entries[key]
                while len(self._entries) >= self.max_hosts:
                    del self._entries[next(iter(self._entries))]
            self._entries[host] = (now + self.ttl, refusal)
        return refusal

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


_verdicts = HostVerdicts()


def _refuse_link_local(host: str) -> None:
    """Raise StepError when ``host`` is, or resolves to, a link-local address (every embedded-IPv4 form too).

    An early, cached verdict with a clear message; the defence itself is in the transport
    (engine.outbound), which judges the addresses it connects to. IP literals (one trailing dot allowed:
    ``169.254.169.254.``) are judged without DNS. A name that does not resolve passes here: the transport
    then fails it as a retryable connection error, as a transient DNS failure should. A name that can never
    be encoded for DNS (an empty label, or one over 63 characters) is refused for good, not crashed on in httpx.
    """
    address = literal(host)
    if address is None:
        try:
            refusal = _verdicts.verdict(host, _resolve_and_judge)
        except UnicodeError:  # Python's IDNA codec on the way to getaddrinfo; httpx would crash on it the same way
            raise StepError(f"host {host[:100]!r} is not a valid DNS name (empty label or one over 63 characters)") \
                from None
        except OSError:
            return
    else:
        refusal = link_local_refusal(host, [address])
    if refusal is not None:
        raise StepError(refusal)


def _resolve_and_judge(host: str) -> str | None:
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return link_local_refusal(host, [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos])


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers as they will be sent: leading and trailing spaces and tabs dropped (RFC 9110 5.5 says they
    are not part of the value), or a non-retryable StepError naming the first bad header, never its value.

    httpx refuses CR, LF, NUL and edge whitespace only while writing the request, as a connection error: the
    run retried a request that could never be sent, with the value (perhaps a secret) in the message. Other
    control characters are refused here too (RFC 9110 forbids them), and non-ASCII values, which httpx
    cannot encode (they crashed the step as an internal error).
    """
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not HEADER_NAME.fullmatch(name):
            raise StepError(f"header name {name[:100]!r} is not a valid HTTP header name; it cannot be sent")
        value = value.strip(" \t")
        bad = HEADER_CONTROL.search(value)
        if bad is not None:
            char = bad.group()
            kind = CONTROL_NAMES.get(char, f"U+{ord(char):04X}")
            raise StepError(f"header {name!r} has a control character ({kind}); it cannot be sent")
        if not value.isascii():
            raise StepError(f"header {name!r} has a non-ASCII character; it cannot be sent")
        out[name] = value
    return out


def _redact_headers(headers: httpx.Headers | dict[str, str], names: tuple[str, ...]) -> dict[str, str]:
    return {k: ("[redacted]" if k.lower() in names else v) for k, v in headers.items()}


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit} more characters not stored]"


def _host_port(url: str) -> str:
    """Host and port only: a URL's user:password part must never reach a message (I9)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _stringify(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _mapping(name: str, expr: Expr | None, r: RenderContext) -> Mapping[Any, Any]:
    value = expr.render(r) if expr is not None else {}
    if not isinstance(value, Mapping):
        raise StepError(f"{name} must render to a mapping, got {type(value).__name__}")
    return value


def execute(ctx: StepContext) -> Outcome:
    cfg: HttpConfig = ctx.step.config
    r = ctx.render
    url = str(cfg.url.render(r))
    headers = {str(k): _stringify(v) for k, v in _mapping("headers", cfg.headers, r).items()}
    if not any(k.lower() == "idempotency-key" for k in headers):
        headers["Idempotency-Key"] = ctx.idempotency_key
    headers.setdefault("User-Agent", ctx.options.user_agent)
    params = {str(k): _stringify(v) for k, v in _mapping("query", cfg.query, r).items()}
    content: bytes | None = None
    if cfg.json is not None:
        content = json.dumps(cfg.json.render(r), default=str).encode()
        headers.setdefault("Content-Type", "application/json")
    elif cfg.form is not None:
        form = cfg.form.render(r)
        if not isinstance(form, dict):
            raise StepError("form must render to a mapping")
        content = httpx.QueryParams({str(k): _stringify(v) for k, v in form.items()}).__str__().encode()
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif cfg.body is not None:
        content = _stringify(cfg.body.render(r)).encode()
    headers = _check_headers(headers)
    check_url(url, cfg, ctx)
    prepared = _connect(ctx, cfg, url, headers, params, content)
    if prepared is not None:
        headers = prepared.request.headers
    timeout = cfg.timeout if cfg.timeout is not None else ctx.options.default_timeout
    limit = ctx.options.max_recorded_body
    full_url = str(httpx.URL(url, params=params)) if params else url
    request_record: dict[str, Any] = {
        "method": cfg.method,
        "url": full_url,
        "headers": _redact_headers(headers, ctx.options.redact_headers),
        "body": _clip(content.decode("utf-8", "replace"), limit) if content else None,
        "timeout": timeout,
    }
    if cfg.connection is not None:
        request_record["connection"] = cfg.connection
    step_input = {"method": cfg.method, "url": full_url, "body": request_record["body"]}

    if ctx.has_stub:
        response = _stub_response(ctx.stub, cfg.method, full_url)
    elif ctx.dry_run:
        placeholder = Placeholder(f"response of {ctx.path or ctx.step.id}")
        return Outcome(output={"response": placeholder}, input=step_input, request=request_record)
    else:
        if ctx.http is None:
            raise StepError("no HTTP client available for this run")
        send = ctx.http.request if prepared is None else prepared.sender(ctx.http)
        try:
            response = send(cfg.method, url, params=params or None, headers=headers, content=content, timeout=timeout)
        except httpx.TimeoutException as exc:
            err = HttpStepError(f"timed out after {timeout:g}s ({type(exc).__name__})", retryable=True, timeout=True)
            err.request = request_record
            raise err from None
        except httpx.InvalidURL as exc:
            raise StepError(f"invalid URL {url[:200]!r}: {exc}") from None
        except LinkLocalRefused as exc:  # what the transport resolved at connect time (DNS rebinding)
            raise StepError(str(exc)) from None
        except httpx.HTTPError as exc:
            err = HttpStepError(f"connection failed: {exc or type(exc).__name__}", retryable=True)
            err.request = request_record
            raise err from None

    text = response.text
    try:
        body_json: Any = response.json() if text else None
    except ValueError:
        body_json = None
    _redact_response(ctx, cfg, body_json)
    elapsed = response.elapsed.total_seconds() * 1000 if _has_elapsed(response) else None
    response_record = {
        "status": response.status_code,
        "headers": _redact_headers(response.headers, ctx.options.redact_headers),
        "body": _clip(text, limit),
        "elapsed_ms": round(elapsed, 2) if elapsed is not None else None,
    }
    status = response.status_code
    if not any(lo <= status <= hi for lo, hi in cfg.success):
        retryable = status >= 500 or status in RETRYABLE_STATUSES
        reason = response.reason_phrase or ""
        err = HttpStepError(
            f"{cfg.method} {_host_port(url)} answered {status} {reason}".rstrip()
            + ("" if retryable else " (not retryable)"),
            retryable=retryable,
            status=status,
            retry_after=_retry_after(response.headers.get("retry-after")),
        )
        err.request = request_record
        err.response = response_record
        raise err
    output = {
        "response": {"status": status, "headers": _redact_headers(response.headers, ctx.options.redact_headers),
                     "json": body_json, "text": _clip(text, limit)}
    }
    return Outcome(output=output, input=step_input, request=request_record, response=response_record)


def _connect(ctx: StepContext, cfg: HttpConfig, url: str, headers: dict[str, str], params: dict[str, str],
             content: bytes | None) -> Prepared | None:
    """Apply the step's connection (credentials or a signature of ``content``, the exact bytes sent).

    Not for dry runs and stubbed responses: nothing is sent, so no token is fetched. Every value the
    connection adds is registered in ``ctx.render.secrets``, so records show ``${connection:<name>}``.
    """
    if cfg.connection is None or ctx.dry_run or ctx.has_stub:
        return None
    if ctx.options.connections is None:
        raise StepError(f"connection {cfg.connection}: connections are not available in this process")
    request = Outbound(cfg.method, url, headers, params, content or b"", ctx.idempotency_key)
    prepared = ctx.options.connections.prepare(cfg.connection, request, ctx.render, ctx.http)
    request.headers = _check_headers(request.headers)
    return prepared


def _redact_response(ctx: StepContext, cfg: HttpConfig, body: Any) -> None:
    """Values at the step's ``redact:`` JSONPaths become secrets of the run: recorded as ``${<step>:<path>}``."""
    for path in cfg.redact:
        try:
            matches = path.compiled.find(body) if body is not None else []
        except Exception:  # noqa: BLE001 - jsonpath-ng raises anything on odd data; nothing matched
            matches = []
        for i, match in enumerate(matches):
            if isinstance(match.value, str) and match.value:
                ctx.render.secrets[f"{ctx.step.id}:{path.path}" + (f"[{i}]" if i else "")] = match.value


def _has_elapsed(response: httpx.Response) -> bool:
    try:
        response.elapsed  # noqa: B018 - raises when the response was built, not received
    except RuntimeError:
        return False
    return True


def _stub_response(stub: Any, method: str, url: str) -> httpx.Response:
    stub = stub if isinstance(stub, dict) else {"json": stub}
    status = int(stub.get("status", 200))
    headers = stub.get("headers") or {}
    request = httpx.Request(method, url)
    if "json" in stub:
        return httpx.Response(status, headers=headers, json=stub["json"], request=request)
    return httpx.Response(status, headers=headers, text=str(stub.get("body", "")), request=request)


def destination(ctx: StepContext) -> str | None:
    """The origin this step will call (scheme://host:port), for destination protection (rendered before the attempt)."""
    from engine.destinations import origin_of

    cfg: HttpConfig = ctx.step.config
    return origin_of(str(cfg.url.render(ctx.render)))


def counts_as_outage(exc: Exception) -> bool:
    """Failures that say the host is unwell (not that our request was wrong or too fast)."""
    return isinstance(exc, HttpStepError) and (exc.status is None or exc.status >= 500)


register(
    StepType(
        name="http",
        help="Send one HTTP request; its response is `steps.<id>.response` (`status`, `headers`, `json`, `text`).",
        shape="fields",
        fields=FIELDS,
        build=build,
        execute=execute,
        side_effects=True,
        destination=destination,
        outage=counts_as_outage,
        retry=lambda cfg: cfg.retry,
        timeout=lambda cfg: cfg.timeout,
        limits=lambda cfg: cfg.limits,
        example=(
            "http:\n  method: POST\n  url: ${CRM_URL}/contacts\n  json:\n    email: \"{{ steps.payment.email }}\"\n"
            "  retry: {max_attempts: 6, initial: 2s, max_delay: 10m}"
        ),
    )
)
