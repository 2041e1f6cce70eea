"""Secrets out of records: one-way redaction for the audit record, reversible sealing for resume state.

A secret (a ``${VAR}`` value read from the environment, or a value a connection adds to a request)
reaches recorded values in many encodings: raw, percent-encoded in URLs and form bodies, escaped in
JSON, and base64 (Basic credentials, tokens a target echoes back). Every form is replaced.

- :func:`redact` is for what operators see (pages, API, fixtures, logs): each form becomes ``${NAME}``.
- :func:`seal` is for what a resumed run continues from (``StepResult.state``): each form becomes a
  marker that records the secret's name and encoding, and :func:`unseal` puts the value from the
  environment back, so a retry computes exactly what the first attempt computed while the database
  holds no secret (I5, I9).
- :func:`cap` bounds a recorded value for display; resume state is never capped.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import httpx

from engine import envrefs
from engine.model import Flow

_Encoder = Callable[[str], list[str]]


def _b64_fragments(secret: str, alphabet: Callable[[bytes], bytes]) -> list[str]:
    """The base64 text of ``secret`` as it appears inside the encoding of any longer value.

    A secret at byte offset 0, 1 or 2 (mod 3) of the encoded value is encoded three ways; the
    characters made only of the secret's own bits are the same wherever it sits (``user:secret``
    Basic credentials, a token inside a JSON document that a target base64-encodes).
    """
    data = secret.encode()
    out = [alphabet(data).decode()]  # alone, padded
    if len(data) < 6:
        return out
    for offset in (0, 1, 2):
        text = alphabet(b"\x00" * offset + data).decode().rstrip("=")
        start = -(-8 * offset // 6)
        end = (8 * (offset + len(data))) // 6
        if end - start >= 8:
            out.append(text[start:end])
    return out


ENCODINGS: dict[str, _Encoder] = {
    "raw": lambda s: [s],
    "url": lambda s: [quote(s, safe="")],
    "url_path": lambda s: [quote(s, safe="/")],
    "form": lambda s: [quote_plus(s)],
    "form_path": lambda s: [quote_plus(s, safe="/")],
    "query": lambda s: [str(httpx.QueryParams({"k": s}))[2:]],
    "json": lambda s: [json.dumps(s)[1:-1]],
    "json_utf8": lambda s: [json.dumps(s, ensure_ascii=False)[1:-1]],
    "b64": lambda s: _b64_fragments(s, base64.b64encode),
    "b64url": lambda s: _b64_fragments(s, base64.urlsafe_b64encode),
}


@functools.lru_cache(maxsize=256)
def _forms(secrets: tuple[tuple[str, str], ...]) -> list[tuple[str, str, str, int]]:
    """(encoded text, name, encoding, fragment index), longest first: the same few secrets recur in every step."""
    seen: dict[str, tuple[str, str, int]] = {}
    for name, secret in secrets:
        if not secret:
            continue
        for encoding, encode in ENCODINGS.items():
            for index, form in enumerate(encode(secret)):
                if form:
                    seen.setdefault(form, (name, encoding, index))
    return sorted(((f, *rest) for f, rest in seen.items()), key=lambda p: -len(p[0]))


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {fn(k) if isinstance(k, str) else k: _walk(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, fn) for v in value]
    return value


SECRET_WORDS = ("TOKEN", "SECRET", "KEY", "PASS", "PWD", "AUTH", "CREDENTIAL", "PRIVATE", "SIGN", "SESSION",
                "COOKIE", "CERT", "SALT", "DSN", "BEARER", "HMAC", "WHSEC", "WEBHOOK", "HOOK")
"""A ``${VAR}`` whose name contains one of these (any case) is a secret; other plain names are shown.
Incoming-webhook URLs (Slack's hooks.slack.com/services/...) carry their credential in the path."""
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# credentials inside a value: userinfo in a URL, or a query parameter named like a secret
_EMBEDDED = re.compile(r"://[^/?#\s]*@|[?&][^=&#]*(?:token|key|secret|sig|auth|pass)[^=&#]*=", re.I)
# a long run of letters and digits, both, is a token whatever the variable is called (a path credential)
_TOKENISH = re.compile(r"(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{20,}")


def public_names(secrets: Mapping[str, str], masked: Collection[str] = ()) -> frozenset[str]:
    """Names in ``secrets`` whose values records may show: plain environment variable names with no secret
    word (CRM_URL, REGION) and values without embedded credentials, minus ``masked`` (verification
    secrets). Connection and response secrets (``connection:crm``, ``step:$.token``) are never public."""
    return frozenset(n for n, v in secrets.items() if _PLAIN.fullmatch(n) and n not in masked
                     and not any(w in n.upper() for w in SECRET_WORDS) and not _EMBEDDED.search(v)
                     and not _TOKENISH.search(v))


def redact(value: Any, secrets: Mapping[str, str], public: Collection[str] = ()) -> Any:
    """Replace every form of every secret value with ``${NAME}`` inside strings, lists and mappings (I9);
    values of ``public`` names (see :func:`public_names`) stay, so a URL shows its host."""
    forms = _forms(tuple((n, v) for n, v in secrets.items() if n not in public))
    if not forms:
        return value

    def one(text: str) -> str:
        for form, name, _encoding, _index in forms:
            if form in text:
                text = text.replace(form, f"${{{name}}}")
        return text

    return _walk(value, one)


# Markers live in Unicode's private use area: flow data has no business there, and the one character
# that starts a marker is escaped when it occurs in a value, so sealing is exactly reversible.
_OPEN, _SEP, _CLOSE, _ESCAPED = "\ue000", "\ue001", "\ue002", "\ue003"
_MARKER = re.compile(f"{_OPEN}(?:{_ESCAPED}|([^{_SEP}{_CLOSE}]+){_SEP}(\\w+){_SEP}(\\d+){_CLOSE})")


def seal(value: Any, secrets: Mapping[str, str]) -> Any:
    """``value`` with every form of every secret replaced by a marker naming it; see :func:`unseal`."""
    forms = [f for f in _forms(tuple(secrets.items())) if _OPEN not in f[0]]

    def one(text: str) -> str:
        if _OPEN in text:
            text = text.replace(_OPEN, _OPEN + _ESCAPED)
        for form, name, encoding, index in forms:
            if form in text:
                text = text.replace(form, f"{_OPEN}{name}{_SEP}{encoding}{_SEP}{index}{_CLOSE}")
        return text

    return _walk(value, one)


def unseal(value: Any, lookup: Callable[[str], str | None]) -> Any:
    """Undo :func:`seal` with today's values (``lookup(name)``); a secret no longer set stays ``${NAME}``."""

    def one(text: str) -> str:
        if _OPEN not in text:
            return text

        def put_back(match: re.Match[str]) -> str:
            name, encoding, index = match.groups()
            if name is None:
                return _OPEN
            secret = lookup(name)
            if secret is None:
                return f"${{{name}}}"
            forms = ENCODINGS[encoding](secret) if encoding in ENCODINGS else []
            return forms[int(index)] if int(index) < len(forms) else f"${{{name}}}"

        return _MARKER.sub(put_back, text)

    return _walk(value, one)


def cap(value: Any, limit: int) -> Any:
    """Values whose JSON exceeds ``limit`` bytes are recorded as a marker with a preview (HOOKLINE_MAX_STORED_BODY).

    Only the audit record is cut: the run continues from the whole value (``StepResult.state``, or the
    recomputed output of a pure step).
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        return value
    if len(text) <= limit:
        return value
    return {"_truncated": True, "bytes": len(text), "limit": limit,
            "preview": text[: max(0, limit - 200)] + f"… [{len(text) - limit + 200} more bytes not stored]"}


def verify_names(flow: Flow) -> frozenset[str]:
    """The ``${VAR}`` names a flow's trigger verifies with: masked whatever they are called."""
    verify = flow.trigger.verify
    texts = [flow.trigger.verify_token or ""]
    if verify is not None:
        texts += [*verify.secrets, *(str(v) for v in verify.options.values())]
    return frozenset(ref.name for text in texts for ref in envrefs.refs(text))
