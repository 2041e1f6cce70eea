"""engine.presets: every registered preset round-trips sign -> verify, redacts what it must, fails cleanly;
Twilio and Square against their official SDKs; the ``url`` option behind a proxy.

The registry-wide tests are parametrized from ``REGISTRY``, so a new preset is covered by adding its file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import pytest
from square.utils.webhooks_helper import verify_signature as square_verify
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from engine import envrefs
from engine.errors import VerificationError, VerificationUnavailable
from engine.presets import (
    REGISTRY,
    Field,
    Preset,
    Request,
    VerifyConfig,
    form_rule,
    parse_verify,
    register,
    secret_fields,
    sign,
    verify_request,
)
from engine.presets.base import nothing_sent

NOW = 1_700_000_000.0
BODY = b"id=evt_1&type=thing.happened&note=a+b"  # a form: every preset signs one (Twilio signs only forms or hashes)
CTYPE = "application/x-www-form-urlencoded"
URL = "https://hooks.example.com/hooks/x?tenant=acme"
# One value that is a valid secret for every preset (Standard Webhooks needs whsec_ + base64).
SECRET_VALUE = "whsec_" + base64.b64encode(b"a shared secret for every preset!").decode()
OTHER_VALUE = "whsec_" + base64.b64encode(b"another secret, for rotation....").decode()


def env_for(raw: Mapping[str, Any], value: str = SECRET_VALUE) -> dict[str, str]:
    """Every ${VAR} in a raw verify mapping set to ``value``."""
    texts = [v for v in raw.values() if isinstance(v, str)] + [x for v in raw.values() if isinstance(v, list) for x in v]
    return {ref.name: value for text in texts for ref in envrefs.refs(text)}


def make(raw: Mapping[str, Any]) -> VerifyConfig:
    config, problems = parse_verify(raw)
    assert problems == [] and config is not None
    return config


def request(headers: Mapping[str, str], body: bytes = BODY, url: str = URL, ctype: str = CTYPE) -> Request:
    return Request.build(body=body, headers={"Content-Type": ctype, **headers}, url=url)


def verify(config: VerifyConfig, req: Request, env: Mapping[str, str], now: float = NOW) -> None:
    verify_request(config, req, env=env, now=now)


def reason(config: VerifyConfig, req: Request, env: Mapping[str, str]) -> str:
    with pytest.raises(VerificationError) as info:
        verify(config, req, env)
    message = str(info.value)
    assert "\n" not in message and SECRET_VALUE not in message
    return message


PRESETS = sorted(REGISTRY)


# --------------------------------------------------------------------------- every preset, from the registry


@pytest.mark.parametrize("name", PRESETS)
def test_declaration_is_complete(name: str) -> None:
    preset = REGISTRY[name]
    assert preset.summary and preset.title and preset.example["provider"] == name
    assert all(f.help for f in preset.fields), "every field needs help text for the reference"
    config = make(preset.example)
    assert "\n" not in REGISTRY[name].hint(config)


@pytest.mark.parametrize("name", PRESETS)
def test_example_round_trips(name: str) -> None:
    raw = REGISTRY[name].example
    config, env = make(raw), env_for(raw)
    headers = sign(config, BODY, env=env, now=NOW, url=URL, content_type=CTYPE)
    verify(config, request(headers), env)


@pytest.mark.parametrize("name", [n for n in PRESETS if REGISTRY[n].binds_body])
def test_changed_body_fails(name: str) -> None:
    raw = REGISTRY[name].example
    config, env = make(raw), env_for(raw)
    headers = sign(config, BODY, env=env, now=NOW, url=URL, content_type=CTYPE)
    assert "match" in reason(config, request(headers, body=BODY + b" "), env)


@pytest.mark.parametrize("name", PRESETS)
def test_wrong_secret_fails(name: str) -> None:
    raw = REGISTRY[name].example
    config = make(raw)
    headers = sign(config, BODY, env=env_for(raw, OTHER_VALUE), now=NOW, url=URL, content_type=CTYPE)
    assert "match" in reason(config, request(headers), env_for(raw))


@pytest.mark.parametrize("name", [n for n in PRESETS if REGISTRY[n].field("secret")])
def test_rotation_any_listed_secret_matches(name: str) -> None:
    raw = {**REGISTRY[name].example, "secret": ["${NEW}", "${OLD}"]}
    config = make(raw)
    env = {**env_for(REGISTRY[name].example), "NEW": SECRET_VALUE, "OLD": OTHER_VALUE}
    old_only = make({**raw, "secret": "${OLD}"})
    verify(config, request(sign(old_only, BODY, env=env, now=NOW, url=URL, content_type=CTYPE)), env)
    verify(config, request(sign(config, BODY, env=env, now=NOW, url=URL, content_type=CTYPE)), env)


@pytest.mark.parametrize("name", PRESETS)
def test_unset_variables_are_unavailable_not_unverified(name: str) -> None:
    raw = REGISTRY[name].example
    config = make(raw)
    headers = sign(config, BODY, env=env_for(raw), now=NOW, url=URL, content_type=CTYPE)
    with pytest.raises(VerificationUnavailable) as info:
        verify(config, request(headers), {})
    assert "is not set" in str(info.value) and SECRET_VALUE not in str(info.value)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("value", ["", "garbage", "\x00\xff", "\udcff", "v1,v1=,t=", "sha256=" + "zz" * 32])
def test_garbage_in_any_header_is_a_verification_error(name: str, value: str) -> None:
    raw = REGISTRY[name].example
    config, env = make(raw), env_for(raw)
    headers = sign(config, BODY, env=env, now=NOW, url=URL, content_type=CTYPE)
    for header in headers:
        reason(config, request({**headers, header: value}), env)


@pytest.mark.parametrize("name", PRESETS)
def test_no_secret_survives_redaction(name: str) -> None:
    """What ingress stores (headers minus secret_fields) holds no secret: the check that redaction was declared."""
    raw = REGISTRY[name].example
    config, env = make(raw), env_for(raw)
    headers = sign(config, BODY, env=env, now=NOW, url=URL, content_type=CTYPE)
    secret_headers, _ = secret_fields(config)
    kept = " ".join(v for k, v in headers.items() if k.lower() not in secret_headers)
    for value in {SECRET_VALUE, base64.b64encode(SECRET_VALUE.encode()).decode()}:
        assert value not in kept
    if any(f.secret for f in REGISTRY[name].fields if f.kind != "secret") or not REGISTRY[name].binds_body:
        assert secret_headers, "a preset that sends its secret must name the header carrying it"


def test_token_in_query_is_a_secret_query_parameter() -> None:
    config = make({"provider": "token", "query": "key", "secret": "${T}"})
    assert secret_fields(config) == ((), ("key",))
    verify(config, request({}, url="https://h.test/hooks/x?key=tok-1"), {"T": "tok-1"})


def test_register_refuses_secret_fields_without_carriers() -> None:
    preset = REGISTRY["token"]
    with pytest.raises(ValueError, match="no carriers"):
        register(Preset(name="leaky", title="Leaky", summary="x", fields=(Field("secret", "secret", "x", secret=True),),
                        verify=preset.verify, sign=preset.sign, hint=preset.hint, example={"provider": "leaky"}))
    assert "leaky" not in REGISTRY
    with pytest.raises(ValueError, match="twice"):
        register(Preset(name="github", title="x", summary="x", fields=(), verify=preset.verify, sign=preset.sign,
                        hint=preset.hint, example={}, carriers=nothing_sent))


def test_form_rules() -> None:
    assert form_rule(make(REGISTRY["github"].example)) is not None
    assert form_rule(make(REGISTRY["slack"].example)) is None
    assert form_rule(None) is None


# --------------------------------------------------------------------------- Twilio


TWILIO_TOKEN = "12345abcdeftwiliotoken"
TWILIO_URL = "https://hooks.example.com/hooks/sms?flow=inbound"
FORM = [("From", "+15005550006"), ("Body", "hello & bye"), ("To", "+15005550001"), ("MediaUrl", "b"),
        ("MediaUrl", "a"), ("Empty", "")]
FORM_BODY = urlencode(FORM).encode()
FORM_TYPE = "application/x-www-form-urlencoded"
TWILIO = {"provider": "twilio", "secret": "${TWILIO_AUTH_TOKEN}"}
TWILIO_ENV = {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN}


def twilio_request(signature: str, url: str = TWILIO_URL, body: bytes = FORM_BODY, ctype: str = FORM_TYPE,
                   **headers: str) -> Request:
    return Request.build(body=body, headers={"Content-Type": ctype, "X-Twilio-Signature": signature, **headers},
                         url=url)


def test_twilio_sdk_signature_is_accepted() -> None:
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(TWILIO_URL, MultiDict(FORM))
    verify(make(TWILIO), twilio_request(signature), TWILIO_ENV)


def test_twilio_sdk_accepts_our_signature() -> None:
    headers = sign(make(TWILIO), FORM_BODY, env=TWILIO_ENV, now=NOW, url=TWILIO_URL, content_type=FORM_TYPE)
    assert RequestValidator(TWILIO_TOKEN).validate(TWILIO_URL, MultiDict(FORM), headers["X-Twilio-Signature"])


@pytest.mark.parametrize(("signed", "received"), [
    ("https://hooks.example.com:443/hooks/sms", "https://hooks.example.com/hooks/sms"),
    ("https://hooks.example.com/hooks/sms", "https://hooks.example.com:443/hooks/sms"),
    ("http://hooks.example.com:80/hooks/sms", "http://hooks.example.com/hooks/sms"),
])
def test_twilio_default_port_either_way(signed: str, received: str) -> None:
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(signed, MultiDict(FORM))
    assert RequestValidator(TWILIO_TOKEN).validate(received, MultiDict(FORM), signature)
    verify(make(TWILIO), twilio_request(signature, url=received), TWILIO_ENV)


def test_twilio_changed_parameter_or_url_fails() -> None:
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(TWILIO_URL, MultiDict(FORM))
    tampered = urlencode([*FORM[:1], ("Body", "hello & buy"), *FORM[2:]]).encode()
    assert reason(make(TWILIO), twilio_request(signature, body=tampered), TWILIO_ENV).startswith("no signature")
    assert reason(make(TWILIO), twilio_request(signature, url=TWILIO_URL + "&x=1"), TWILIO_ENV).startswith("no sig")


def test_twilio_json_body_is_bound_by_body_sha256() -> None:
    body = b'{"ConversationSid": "CH1"}'
    url = f"https://hooks.example.com/hooks/sms?bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, {})
    verify(make(TWILIO), twilio_request(signature, url=url, body=body, ctype="application/json"), TWILIO_ENV)
    unbound = twilio_request(RequestValidator(TWILIO_TOKEN).compute_signature(TWILIO_URL, {}), body=body,
                             ctype="application/json")
    assert "neither" in reason(make(TWILIO), unbound, TWILIO_ENV)
    with pytest.raises(ValueError, match="bodySHA256"):
        sign(make(TWILIO), body, env=TWILIO_ENV, now=NOW, url=TWILIO_URL, content_type="application/json")
    ours = sign(make(TWILIO), body, env=TWILIO_ENV, now=NOW, url=url, content_type=CTYPE)
    assert RequestValidator(TWILIO_TOKEN).validate(url, body.decode(), ours["X-Twilio-Signature"])
    assert "bodySHA256" in reason(make(TWILIO), twilio_request(signature, url=url, body=body + b" "), TWILIO_ENV)


def test_twilio_shared_key_sha256() -> None:
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(TWILIO_URL, MultiDict(FORM), "HMAC_SHA256")
    settings = {"X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"}
    verify(make(TWILIO), twilio_request(signature, **settings), TWILIO_ENV)
    assert "unsupported" in reason(make(TWILIO), twilio_request(
        signature, **{"X-Twilio-Webhooks-Signature-Settings": "algorithm=HMAC_MD5"}), TWILIO_ENV)
    assert "32-byte" not in reason(make(TWILIO), twilio_request(signature), TWILIO_ENV)  # SHA-1 expected: 20 bytes


def test_twilio_behind_a_proxy_needs_the_public_url() -> None:
    public = "https://hooks.example.com/hooks/sms"
    internal = "http://10.0.0.7:8000/hooks/sms?flow=inbound"  # what the app sees behind the proxy
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(public + "?flow=inbound", MultiDict(FORM))
    assert reason(make(TWILIO), twilio_request(signature, url=internal), TWILIO_ENV).startswith("no signature")
    # The received query string is appended to a configured URL without one.
    verify(make({**TWILIO, "url": public}), twilio_request(signature, url=internal), TWILIO_ENV)
    from_env = make({**TWILIO, "url": "${PUBLIC_BASE}/hooks/sms"})
    verify(from_env, twilio_request(signature, url=internal), {**TWILIO_ENV, "PUBLIC_BASE": "https://hooks.example.com"})
    with pytest.raises(VerificationUnavailable, match="url for flow is not configured: .*PUBLIC_BASE is not set"):
        verify(from_env, twilio_request(signature, url=internal), TWILIO_ENV)


def test_url_option_is_validated() -> None:
    _, problems = parse_verify({**TWILIO, "url": "hooks.example.com/sms"})
    assert [k for k, _ in problems] == ["url"]
    _, problems = parse_verify({"provider": "github", "secret": "x", "url": "https://h.test"})
    assert problems[0][1].startswith("unknown key 'url' for provider github")


# --------------------------------------------------------------------------- Square


SQUARE_KEY = "Ibxx_5AKakO-3qeNVR61Dw"
SQUARE_URL = "https://hooks.example.com/hooks/square-payments"
SQUARE_BODY = json.dumps({"merchant_id": "MLEFBHHSJGVHD", "type": "payment.updated", "event_id": "ac3ac95b"}).encode()
SQUARE = {"provider": "square", "secret": "${SQUARE_SIGNATURE_KEY}", "url": SQUARE_URL}
SQUARE_ENV = {"SQUARE_SIGNATURE_KEY": SQUARE_KEY}


def test_square_sdk_accepts_our_signature() -> None:
    headers = sign(make(SQUARE), SQUARE_BODY, env=SQUARE_ENV, now=NOW)
    assert square_verify(request_body=SQUARE_BODY.decode(), signature_header=headers["X-Square-HmacSha256-Signature"],
                         signature_key=SQUARE_KEY, notification_url=SQUARE_URL)
    assert not square_verify(request_body=SQUARE_BODY.decode() + " ", signature_key=SQUARE_KEY,
                             signature_header=headers["X-Square-HmacSha256-Signature"], notification_url=SQUARE_URL)


def test_square_documented_computation_is_accepted() -> None:
    # Square documents base64(HMAC-SHA256(signature key, notification URL + body)); its SDK only verifies.
    digest = base64.b64encode(hmac.new(SQUARE_KEY.encode(), SQUARE_URL.encode() + SQUARE_BODY, "sha256").digest())
    req = Request.build(body=SQUARE_BODY, headers={"x-square-hmacsha256-signature": digest.decode()},
                        url="http://10.0.0.7:8000/hooks/square-payments")
    verify(make(SQUARE), req, SQUARE_ENV)
    assert reason(make({**SQUARE, "url": SQUARE_URL + "/"}), req, SQUARE_ENV).startswith("no signature matches")
    no_url = make({k: v for k, v in SQUARE.items() if k != "url"})
    verify(no_url, Request.build(body=SQUARE_BODY, headers=dict(req.headers), url=SQUARE_URL), SQUARE_ENV)
