"""Twilio: ``X-Twilio-Signature``, base64 HMAC-SHA1 of the full URL followed by the POST parameters.

As Twilio's ``RequestValidator``: the parameters are sorted by name (each name once, its distinct values
sorted) and appended as name+value; the URL is tried with and without its default port, since Twilio
signs either. A JSON body is not in the MAC: Twilio adds ``bodySHA256=<hex SHA-256 of the body>`` to the
URL instead, which is checked here too. A webhook signed with a SharedKey names its algorithm
(``HMAC_SHA256``) in ``X-Twilio-Webhooks-Signature-Settings``; the secret is then that key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

from engine.errors import VerificationError
from engine.presets import base
from engine.presets.base import SECRET, URL, Preset, Request, VerifyConfig, nothing_sent, register

SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
_ALGORITHMS = {"HMAC_SHA1": "sha1", "HMAC_SHA256": "sha256"}
_DEFAULT_PORTS = {"https": 443, "http": 80}


def _algorithm(request: Request) -> str:
    for part in request.headers.get(SETTINGS_HEADER.lower(), "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            algorithm = _ALGORITHMS.get(value.strip().upper())
            if algorithm is None:
                raise VerificationError(f"{SETTINGS_HEADER} names an unsupported algorithm")
            return algorithm
    return "sha1"


def _url_variants(url: str) -> list[str]:
    """The URL without and with its scheme's default port, as Twilio's validator tries both."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: only the URL as written can match
        return [url]
    host = parts.netloc.rsplit(":", 1)[0] if port else parts.netloc
    default = _DEFAULT_PORTS.get(parts.scheme, 80)
    without = parts._replace(netloc=host).geturl()
    with_port = parts._replace(netloc=f"{host}:{port or default}").geturl()
    return list(dict.fromkeys([without, with_port]))


def _params(pairs: Sequence[tuple[str, str]]) -> str:
    values: dict[str, set[str]] = {}
    for name, value in pairs:
        values.setdefault(name, set()).add(value)
    return "".join(name + value for name in sorted(values) for value in sorted(values[name]))


def _messages(request: Request, config: VerifyConfig, env: Mapping[str, str]) -> list[bytes]:
    url = base.signed_url(request, config, env)
    body_hash = [v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True) if k == "bodySHA256"]
    if body_hash:
        if not base.equal(base.utf8(body_hash[0].lower()), hashlib.sha256(request.body).hexdigest().encode()):
            raise VerificationError("bodySHA256 in the URL does not match the body")
        params = ""
    elif request.body and not request.form:
        # Only form parameters or a bodySHA256 bind a body; any other body would go unsigned.
        raise VerificationError("Twilio signs form bodies, or other bodies by bodySHA256 in the URL; this has neither")
    else:
        params = _params(request.form)
    return [base.utf8(variant + params) for variant in _url_variants(url)]


def verify(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float) -> None:
    secrets = base.keys(config, env)
    algorithm = _algorithm(request)
    size = hashlib.new(algorithm).digest_size
    signature = base.unb64(base.header(request, "X-Twilio-Signature"), size)
    if signature is None:
        raise VerificationError(f"X-Twilio-Signature is malformed: expected the base64 of a {size}-byte HMAC")
    base.require_match(secrets, _messages(request, config, env), [signature], algorithm)


def sign(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float, msg_id: str) -> dict[str, str]:
    (key,) = base.keys(config, env, first_only=True)
    url = base.signed_url(request, config, env)
    if "bodySHA256=" in urlsplit(url).query:
        params = ""
    elif request.body and not request.form:
        raise ValueError("Twilio signs a body that is not a form by bodySHA256=<hex SHA-256> in the URL; add it")
    else:
        params = _params(request.form)
    return {"X-Twilio-Signature": base.b64(base.mac(key, base.utf8(url + params), "sha1"))}


def hint(config: VerifyConfig) -> str:
    return (f"Twilio signs with the X-Twilio-Signature header (base64 HMAC-SHA1 of {base.url_hint(config)} followed "
            "by the sorted POST parameters)")


PRESET = register(Preset(
    "twilio", "Twilio",
    summary="Twilio webhooks (SMS, voice, status callbacks): base64 HMAC-SHA1 of the full URL followed by the "
            "form parameters sorted by name. The secret is the account's Auth Token. Set `url` when Hookline "
            "sits behind a proxy: Twilio signs the URL it calls. Form fields become the event as a mapping "
            "(`event.From`, `event.Body`).",
    fields=(SECRET, URL),
    verify=verify, sign=sign, hint=hint, carriers=nothing_sent,
    example={"provider": "twilio", "secret": "${TWILIO_AUTH_TOKEN}", "url": "https://hooks.example.com/hooks/sms"},
))
