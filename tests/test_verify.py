"""engine.presets: the original presets against their providers' own libraries, plus the failure reasons.

Registry-wide round trips and the Twilio and Square presets are in tests/test_presets.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import pkgutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
import standardwebhooks.webhooks
import stripe
import svix.webhooks
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.signature import Clock, SignatureVerifier

from engine import presets
from engine.errors import VerificationError, VerificationUnavailable
from engine.presets import PROVIDERS, Request, VerifyConfig, hint, parse_verify, secret_fields, sign, verify_request

NOW = 1_700_000_000.0
BODY = b'{"id": "evt_1", "object": "event", "type": "charge.succeeded", "data": {"object": {}}}'
STD_KEY = b"standard-webhooks key bytes 0123"
ENV = {
    "NEW_SECRET": "whsec_new_0123456789abcdef",
    "OLD_SECRET": "old-secret-fedcba9876543210",
    "STD_SECRET": "whsec_" + base64.b64encode(STD_KEY).decode(),
    "STD_OLD": "whsec_" + base64.b64encode(b"an older standard-webhooks key!!").decode(),
    "HOOK_USER": "hookuser",
    "HOOK_PASS": "pa:ss-w0rd",
}

# One raw `trigger.verify` mapping per MAC preset (and hmac variants); the secret is always ${NEW_SECRET}
# except Standard Webhooks, whose secrets are base64 keys.
MAC_PRESETS: dict[str, dict[str, Any]] = {
    "stripe": {"provider": "stripe", "secret": "${NEW_SECRET}"},
    "github": {"provider": "github", "secret": "${NEW_SECRET}"},
    "shopify": {"provider": "shopify", "secret": "${NEW_SECRET}"},
    "slack": {"provider": "slack", "secret": "${NEW_SECRET}"},
    "standard-webhooks": {"provider": "standard-webhooks", "secret": "${STD_SECRET}"},
    "hmac": {"provider": "hmac", "header": "X-Signature", "prefix": "sha256=", "secret": "${NEW_SECRET}"},
    "hmac-sha1-base64": {
        "provider": "hmac",
        "header": "X-Sig",
        "algorithm": "sha1",
        "encoding": "base64",
        "secret": "${NEW_SECRET}",
    },
    "hmac-timestamped": {
        "provider": "hmac",
        "header": "X-Sig",
        "algorithm": "SHA512",
        "timestamp_header": "X-Sig-Timestamp",
        "tolerance": "2m",
        "secret": "${NEW_SECRET}",
    },
}
TIMESTAMPED = {"stripe": 300, "slack": 300, "standard-webhooks": 300, "hmac-timestamped": 120}
OLD_SECRET_VAR = {name: "${STD_OLD}" if name == "standard-webhooks" else "${OLD_SECRET}" for name in MAC_PRESETS}


def make(raw: Mapping[str, Any]) -> VerifyConfig:
    config, problems = parse_verify(raw)
    assert problems == []
    assert config is not None
    return config


def preset(name: str, **overrides: Any) -> VerifyConfig:
    return make({**MAC_PRESETS[name], **overrides})


def lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def check(
    config: VerifyConfig,
    headers: Mapping[str, str],
    *,
    body: bytes = BODY,
    query: Mapping[str, str] | None = None,
    env: Mapping[str, str] = ENV,
    now: float = NOW,
) -> None:
    verify_request(config, Request.build(body=body, headers=headers, url="https://hooks.test/hooks/x", query=query),
                   env=env, now=now)


def reason(config: VerifyConfig, headers: Mapping[str, str], **kwargs: Any) -> str:
    with pytest.raises(VerificationError) as info:
        check(config, headers, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for value in ENV.values():
        assert value not in message
    return message


def signed(
    config: VerifyConfig, *, body: bytes = BODY, now: float = NOW, env: Mapping[str, str] = ENV
) -> dict[str, str]:
    return sign(config, body, env=env, now=now)


# --------------------------------------------------------------------------- cross-checks with provider libraries


def test_stripe_library_header_is_accepted() -> None:
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), ENV["NEW_SECRET"], timestamp=int(NOW))
    check(preset("stripe"), {"Stripe-Signature": header})


def test_stripe_library_accepts_our_signature() -> None:
    now = time.time()
    headers = signed(preset("stripe"), now=now)
    event = stripe.Webhook.construct_event(BODY, headers["Stripe-Signature"], ENV["NEW_SECRET"])
    assert event.id == "evt_1"


def test_stripe_any_v1_may_match_and_other_schemes_are_ignored() -> None:
    good = stripe.WebhookSignature._compute_signature(f"{int(NOW)}.{BODY.decode()}", ENV["NEW_SECRET"])
    header = f"t={int(NOW)},v1={'0' * 64},v0={'f' * 64},v1={good}"
    check(preset("stripe"), {"Stripe-Signature": header})


def test_github_documented_example() -> None:
    # The worked example from GitHub's "Validating webhook deliveries" documentation.
    config = make({"provider": "github", "secret": "It's a Secret to Everybody"})
    digest = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    check(config, {"X-Hub-Signature-256": f"sha256={digest}"}, body=b"Hello, World!")
    assert sign(config, b"Hello, World!", env={}, now=NOW) == {"X-Hub-Signature-256": f"sha256={digest}"}


def test_shopify_documented_computation() -> None:
    # Shopify documents base64(HMAC-SHA256(secret, raw body)); there is no Shopify library to ask.
    digest = base64.b64encode(hmac.new(ENV["NEW_SECRET"].encode(), BODY, hashlib.sha256).digest()).decode()
    check(preset("shopify"), {"X-Shopify-Hmac-Sha256": digest})


# The Standard Webhooks reference library sends webhook-* headers; Svix's (the same scheme) sends svix-*.
SIGNING_LIBRARIES = [pytest.param(standardwebhooks.webhooks.Webhook, "webhook", id="standardwebhooks"),
                     pytest.param(svix.webhooks.Webhook, "svix", id="svix")]


@pytest.mark.parametrize(("library", "prefix"), SIGNING_LIBRARIES)
def test_standard_webhooks_library_signature_is_accepted(library: Any, prefix: str) -> None:
    when = datetime.fromtimestamp(NOW, tz=UTC)
    signature = library(ENV["STD_SECRET"]).sign("msg_1", when, BODY.decode())
    headers = {f"{prefix}-id": "msg_1", f"{prefix}-timestamp": str(int(NOW)), f"{prefix}-signature": signature}
    check(preset("standard-webhooks"), headers)


@pytest.mark.parametrize(("library", "prefix"), SIGNING_LIBRARIES)
def test_standard_webhooks_library_accepts_our_signature(library: Any, prefix: str) -> None:
    headers = signed(preset("standard-webhooks"), now=time.time())
    library(ENV["STD_SECRET"]).verify(BODY, headers)


def test_secret_without_whsec_prefix_is_base64_too() -> None:
    bare = ENV["STD_SECRET"].removeprefix("whsec_")
    config = make({"provider": "standard-webhooks", "secret": bare})
    check(config, signed(preset("standard-webhooks")))


def test_standard_webhooks_several_signatures_and_other_versions() -> None:
    good = signed(preset("standard-webhooks"))
    other = base64.b64encode(b"x" * 32).decode()
    good["webhook-signature"] = f"v1a,{other} v1,{other} {good['webhook-signature']}"
    check(preset("standard-webhooks"), good)


class _FixedClock(Clock):
    def now(self) -> float:
        return NOW


def test_slack_sdk_signature_is_accepted() -> None:
    verifier = SignatureVerifier(ENV["NEW_SECRET"], clock=_FixedClock())
    signature = verifier.generate_signature(timestamp=str(int(NOW)), body=BODY)
    assert signature is not None
    check(preset("slack"), {"X-Slack-Signature": signature, "X-Slack-Request-Timestamp": str(int(NOW))})


def test_slack_sdk_accepts_our_signature() -> None:
    verifier = SignatureVerifier(ENV["NEW_SECRET"], clock=_FixedClock())
    assert verifier.is_valid_request(BODY, signed(preset("slack")))


def test_generic_hmac_matches_a_hand_computed_signature() -> None:
    digest = hmac.new(ENV["NEW_SECRET"].encode(), b"1700000000." + BODY, hashlib.sha512).hexdigest()
    check(preset("hmac-timestamped"), {"X-Sig": digest, "X-Sig-Timestamp": "1700000000"})
    sha1 = base64.b64encode(hmac.new(ENV["NEW_SECRET"].encode(), BODY, hashlib.sha1).digest()).decode()
    check(preset("hmac-sha1-base64"), {"X-Sig": sha1})


# --------------------------------------------------------------------------- every MAC preset


@pytest.mark.parametrize("name", MAC_PRESETS)
def test_round_trip(name: str) -> None:
    check(preset(name), signed(preset(name)))


@pytest.mark.parametrize("name", MAC_PRESETS)
def test_tampered_body_fails(name: str) -> None:
    headers = signed(preset(name))
    assert reason(preset(name), headers, body=BODY + b" ") == "no signature matches (checked 1 secret)"


@pytest.mark.parametrize("name", MAC_PRESETS)
def test_wrong_secret_fails(name: str) -> None:
    headers = signed(preset(name))
    env = {**ENV, "NEW_SECRET": "not the secret", "STD_SECRET": ENV["STD_OLD"]}
    assert reason(preset(name), headers, env=env) == "no signature matches (checked 1 secret)"


@pytest.mark.parametrize("name", MAC_PRESETS)
def test_rotation_second_secret_matches(name: str) -> None:
    old = preset(name, secret=OLD_SECRET_VAR[name])
    rotated = preset(name, secret=[MAC_PRESETS[name]["secret"], OLD_SECRET_VAR[name]])
    check(rotated, signed(old))
    check(rotated, signed(preset(name)))
    assert reason(rotated, signed(old), body=b"{}") == "no signature matches (checked 2 secrets)"


@pytest.mark.parametrize("name", MAC_PRESETS)
def test_rotation_uses_the_secrets_that_resolve(name: str) -> None:
    rotated = preset(name, secret=["${NOT_SET_YET}", OLD_SECRET_VAR[name]])
    check(rotated, signed(preset(name, secret=OLD_SECRET_VAR[name])))


@pytest.mark.parametrize("name", MAC_PRESETS)
def test_missing_secret_is_unavailable(name: str) -> None:
    headers = signed(preset(name))
    config = preset(name, secret="${STRIPE_WEBHOOK_SECRET}")
    with pytest.raises(VerificationUnavailable) as info:
        check(config, headers)
    assert str(info.value) == (
        "verification secret for flow is not configured: environment variable STRIPE_WEBHOOK_SECRET is not set"
    )
    with pytest.raises(VerificationUnavailable):
        sign(config, BODY, env=ENV, now=NOW)


@pytest.mark.parametrize("name", MAC_PRESETS)
def test_secret_resolving_to_empty_is_unavailable(name: str) -> None:
    config = preset(name, secret=["${EMPTY:-}", "${GONE}"])
    with pytest.raises(VerificationUnavailable) as info:
        check(config, signed(preset(name)), env={**ENV, "EMPTY": ""})
    assert "EMPTY is empty" in str(info.value)
    assert "GONE is not set" in str(info.value)


@pytest.mark.parametrize("name", MAC_PRESETS)
def test_each_missing_header_is_named(name: str) -> None:
    headers = signed(preset(name))
    for header in headers:
        rest = {k: v for k, v in headers.items() if k != header}
        assert reason(preset(name), rest).startswith(f"missing {header} header")


GARBAGE = ["", "   ", "garbage", "=,=,", "\x00\xff", "ünï,cödé", "\udcff", "\ud800", "v1,v1=,t=", "sha256=" + "zz" * 32]


@pytest.mark.parametrize("name", MAC_PRESETS)
@pytest.mark.parametrize("value", GARBAGE)
def test_garbage_in_any_header_is_a_verification_error(name: str, value: str) -> None:
    headers = signed(preset(name))
    for header in headers:
        reason(preset(name), {**headers, header: value})


@pytest.mark.parametrize(("name", "skew"), TIMESTAMPED.items())
def test_timestamp_tolerance_both_ways(name: str, skew: int) -> None:
    config = preset(name)
    check(config, signed(config, now=NOW - skew + 1))
    check(config, signed(config, now=NOW + skew - 1))
    assert reason(config, signed(config, now=NOW - skew - 1)) == (
        f"timestamp outside the {skew} s tolerance ({skew + 1} s old)"
    )
    assert reason(config, signed(config, now=NOW + skew + 5)) == (
        f"timestamp outside the {skew} s tolerance ({skew + 5} s in the future)"
    )


@pytest.mark.parametrize("name", ["stripe", "slack", "standard-webhooks"])
def test_tolerance_is_configurable(name: str) -> None:
    config = preset(name, tolerance=10)
    check(config, signed(config, now=NOW - 10))
    assert "outside the 10 s tolerance" in reason(config, signed(config, now=NOW - 11))
    assert preset(name, tolerance="1h").options["tolerance"] == 3600


# --------------------------------------------------------------------------- malformed headers, per preset


MALFORMED = [
    ("stripe", "Stripe-Signature", "garbage", "Stripe-Signature is malformed"),
    ("stripe", "Stripe-Signature", f"v1={'a' * 64}", "expected exactly one t=<timestamp>"),
    ("stripe", "Stripe-Signature", f"t=1,t=2,v1={'a' * 64}", "expected exactly one t=<timestamp>"),
    ("stripe", "Stripe-Signature", f"t=soon,v1={'a' * 64}", "Stripe-Signature t= is malformed"),
    ("stripe", "Stripe-Signature", f"t={int(NOW)},v0={'a' * 64}", "Stripe-Signature has no v1 signature"),
    ("stripe", "Stripe-Signature", f"t={int(NOW)},v1={'g' * 64}", "v1 is not 64 hex digits"),
    ("stripe", "Stripe-Signature", f"t={int(NOW)},v1=abcd", "v1 is not 64 hex digits"),
    ("stripe", "Stripe-Signature", "", "empty Stripe-Signature header"),
    ("github", "X-Hub-Signature-256", f"sha1={'a' * 40}", "expected sha256=<64 hex digits>"),
    ("github", "X-Hub-Signature-256", "a" * 64, "expected sha256=<64 hex digits>"),
    ("github", "X-Hub-Signature-256", f"sha256={'x' * 64}", "expected sha256=<64 hex digits>"),
    ("github", "X-Hub-Signature-256", f"sha256={'ab ' * 32}", "expected sha256=<64 hex digits>"),
    ("github", "X-Hub-Signature-256", "", "empty X-Hub-Signature-256 header"),
    ("shopify", "X-Shopify-Hmac-Sha256", "not base64!", "X-Shopify-Hmac-Sha256 is malformed"),
    ("shopify", "X-Shopify-Hmac-Sha256", base64.b64encode(b"short").decode(), "32-byte"),
    ("slack", "X-Slack-Signature", f"v1={'a' * 64}", "expected v0=<64 hex digits>"),
    ("slack", "X-Slack-Signature", "v0=nothex", "expected v0=<64 hex digits>"),
    ("slack", "X-Slack-Request-Timestamp", "yesterday", "X-Slack-Request-Timestamp is malformed"),
    ("slack", "X-Slack-Request-Timestamp", "-5", "X-Slack-Request-Timestamp is malformed"),
    ("standard-webhooks", "webhook-signature", "v2,abcd", "webhook-signature has no v1,<base64> signature"),
    ("standard-webhooks", "webhook-signature", "v1,@@@@", "v1 is not the base64 of a 32-byte HMAC-SHA256"),
    ("standard-webhooks", "webhook-timestamp", "1.7e9", "webhook-timestamp is malformed"),
    ("hmac", "X-Signature", "a" * 64, "X-Signature is malformed: expected the prefix 'sha256='"),
    ("hmac", "X-Signature", "sha256=abc", "X-Signature is malformed: expected the hex of a 32-byte sha256 HMAC"),
    ("hmac-sha1-base64", "X-Sig", "a" * 40, "expected the base64 of a 20-byte sha1 HMAC"),
    ("hmac-timestamped", "X-Sig-Timestamp", "now", "X-Sig-Timestamp is malformed"),
]


@pytest.mark.parametrize(("name", "header", "value", "expected"), MALFORMED)
def test_malformed_header_reason(name: str, header: str, value: str, expected: str) -> None:
    headers = signed(preset(name))
    assert expected in reason(preset(name), {**headers, header: value})


def test_standard_webhooks_missing_headers_mention_svix_fallback() -> None:
    assert reason(preset("standard-webhooks"), {}) == "missing webhook-id header (or svix-*)"


def test_standard_webhooks_undecodable_secret_is_unavailable() -> None:
    config = preset("standard-webhooks", secret="${BAD}")
    with pytest.raises(VerificationUnavailable, match="not whsec_ followed by base64"):
        check(config, {}, env={"BAD": "whsec_!!!"})


def test_stripe_whsec_secret_is_used_as_raw_utf8() -> None:
    # Stripe keys its HMAC with the whole "whsec_..." string, unlike Standard Webhooks.
    ts = str(int(NOW))
    digest = hmac.new(ENV["NEW_SECRET"].encode(), f"{ts}.".encode() + BODY, hashlib.sha256).hexdigest()
    check(preset("stripe"), {"Stripe-Signature": f"t={ts},v1={digest}"})


# --------------------------------------------------------------------------- token and basic


def test_token_in_header() -> None:
    config = make({"provider": "token", "header": "X-Hook-Token", "secret": ["${NEW_SECRET}", "${OLD_SECRET}"]})
    check(config, {"X-Hook-Token": ENV["NEW_SECRET"]})
    check(config, {"X-Hook-Token": ENV["OLD_SECRET"]})
    assert sign(config, BODY, env=ENV, now=NOW) == {"X-Hook-Token": ENV["NEW_SECRET"]}
    assert reason(config, {"X-Hook-Token": "guess"}) == "token does not match (checked 2 secrets)"
    assert reason(config, {"X-Hook-Token": "ünïcode"}) == "token does not match (checked 2 secrets)"
    assert reason(config, {}) == "missing X-Hook-Token header"
    assert reason(config, {"X-Hook-Token": ""}) == "empty X-Hook-Token header"
    assert secret_fields(config) == (("x-hook-token",), ())


def test_token_in_query() -> None:
    config = make({"provider": "token", "query": "key", "secret": "${NEW_SECRET}"})
    check(config, {}, query={"key": ENV["NEW_SECRET"]})
    assert reason(config, {}, query={"key": ENV["NEW_SECRET"] + "x"}) == "token does not match (checked 1 secret)"
    assert reason(config, {}, query={"key": ""}) == "token does not match (checked 1 secret)"
    assert reason(config, {"key": ENV["NEW_SECRET"]}) == "missing query parameter 'key'"
    assert secret_fields(config) == ((), ("key",))
    with pytest.raises(ValueError, match="query parameter 'key'"):
        sign(config, BODY, env=ENV, now=NOW)


@pytest.mark.parametrize("value", GARBAGE)
def test_token_garbage_never_raises_anything_else(value: str) -> None:
    config = make({"provider": "token", "query": "key", "secret": "${NEW_SECRET}"})
    reason(config, {}, query={"key": value})
    reason(make(BASIC), {"Authorization": f"Basic {value}"})


def test_secret_with_undecodable_environment_bytes() -> None:
    # os.environ turns bytes that are not UTF-8 into lone surrogates; they must still work as a key.
    env = {"S": "tok\udcff"}
    config = make({"provider": "github", "secret": "${S}"})
    digest = hmac.new(b"tok\xff", BODY, hashlib.sha256).hexdigest()
    check(config, {"X-Hub-Signature-256": f"sha256={digest}"}, env=env)
    check(config, sign(config, BODY, env=env, now=NOW), env=env)


def test_token_missing_secret_is_unavailable() -> None:
    config = make({"provider": "token", "header": "X-Hook-Token", "secret": "${HOOK_TOKEN}"})
    with pytest.raises(VerificationUnavailable, match="HOOK_TOKEN is not set"):
        check(config, {"X-Hook-Token": "anything"})


BASIC = {"provider": "basic", "username": "${HOOK_USER}", "password": "${HOOK_PASS}"}


def basic_header(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth() -> None:
    config = make(BASIC)
    check(config, basic_header("hookuser", "pa:ss-w0rd"))
    check(config, {"Authorization": basic_header("hookuser", "pa:ss-w0rd")["Authorization"].replace("Basic", "basic")})
    assert sign(config, BODY, env=ENV, now=NOW) == basic_header("hookuser", "pa:ss-w0rd")
    check(config, signed(config))
    assert secret_fields(config) == (("authorization",), ())


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (basic_header("hookuser", "wrong"), "username or password does not match"),
        (basic_header("someone", "pa:ss-w0rd"), "username or password does not match"),
        (basic_header("hookuser", "pa"), "username or password does not match"),
        ({}, "missing Authorization header"),
        ({"Authorization": ""}, "empty Authorization header"),
        ({"Authorization": "Bearer abc"}, "Authorization is not HTTP basic credentials"),
        ({"Authorization": "Basic"}, "Authorization is malformed"),
        ({"Authorization": "Basic !!!!"}, "Authorization is malformed"),
        ({"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, "Authorization is malformed"),
        ({"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()}, "Authorization is malformed"),
    ],
)
def test_basic_auth_failures(headers: dict[str, str], expected: str) -> None:
    assert expected in reason(make(BASIC), headers)


def test_basic_auth_missing_password_is_unavailable() -> None:
    env = {k: v for k, v in ENV.items() if k != "HOOK_PASS"}
    with pytest.raises(VerificationUnavailable) as info:
        check(make(BASIC), basic_header("hookuser", "x"), env=env)
    assert str(info.value).endswith("not configured: environment variable HOOK_PASS is not set")


# --------------------------------------------------------------------------- parse_verify


def problems(raw: Any) -> list[tuple[str, str]]:
    config, found = parse_verify(raw)
    assert config is None
    assert found
    return found


def test_providers_are_sorted_and_complete() -> None:
    """Every file of engine/presets/ registers the preset it is named after (a new preset is that one file)."""
    files = {m.name.replace("_", "-") for m in pkgutil.iter_modules(presets.__path__) if m.name != "base"}
    assert PROVIDERS == tuple(sorted(PROVIDERS))
    assert files <= set(PROVIDERS) and {"github", "stripe", "twilio"} <= files


def test_unknown_provider() -> None:
    assert problems({"provider": "strpe", "secret": "x"}) == [
        ("provider", f"unknown verify provider 'strpe'; expected one of: {', '.join(PROVIDERS)}")
    ]
    assert problems({"secret": "x"})[0][0] == "provider"
    assert problems(["github"]) == [("", problems(["github"])[0][1])]


def test_unknown_keys_are_all_reported() -> None:
    found = problems({"provider": "github", "secret": "x", "foo": 1, "tolerance": 5})
    assert [key for key, _ in found] == ["foo", "tolerance"]
    assert found[0][1].startswith("unknown key 'foo' for provider github")


def test_basic_does_not_take_secret() -> None:
    found = problems({**BASIC, "secret": "x"})
    assert found == [("secret", "unknown key 'secret' for provider basic; allowed keys: password, username")]
    assert [k for k, _ in problems({"provider": "basic", "username": ""})] == ["username", "password"]


def test_hmac_options_are_validated() -> None:
    found = problems(
        {"provider": "hmac", "secret": "x", "algorithm": "md5", "encoding": "rot13", "prefix": 3, "tolerance": 5}
    )
    assert found == [
        ("header", "required: an HTTP header name, e.g. X-Signature"),
        ("algorithm", "must be one of sha1, sha256, sha512"),
        ("encoding", "must be one of hex, base64"),
        ("prefix", "must be a string, e.g. 'sha256='"),
        ("tolerance", "only applies together with timestamp_header"),
    ]
    assert problems({"provider": "hmac", "secret": "x", "header": "X Sig"})[0] == (
        "header",
        "'X Sig' is not a valid HTTP header name",
    )
    assert problems({"provider": "hmac", "secret": "x", "header": "X-Sig", "timestamp_header": "x-sig"}) == [
        ("timestamp_header", "must differ from header")
    ]


def test_hmac_defaults() -> None:
    config = make({"provider": "hmac", "secret": "x", "header": "X-Sig"})
    assert dict(config.options) == {"header": "X-Sig", "algorithm": "sha256", "encoding": "hex", "prefix": ""}
    timed = make({"provider": "hmac", "secret": "x", "header": "X-Sig", "timestamp_header": "X-Ts"})
    assert timed.options["tolerance"] == 300


def test_token_needs_exactly_one_of_header_and_query() -> None:
    assert problems({"provider": "token", "secret": "x", "header": "X-T", "query": "t"}) == [
        ("", "token takes either header or query, not both")
    ]
    assert problems({"provider": "token", "secret": "x"})[0][0] == ""


@pytest.mark.parametrize(("value", "seconds"), [(300, 300), ("300s", 300), ("5m", 300), ("1h", 3600), ("45", 45),
                                               ("500ms", 0.5), ("1d", 86400), (1.5, 1.5)])
def test_tolerance_values(value: Any, seconds: int) -> None:
    assert make({"provider": "stripe", "secret": "x", "tolerance": value}).options["tolerance"] == seconds


@pytest.mark.parametrize("value", [0, -1, True, "0s", "5 minutes", "5w", "", None, []])
def test_bad_tolerance(value: Any) -> None:
    assert [k for k, _ in problems({"provider": "slack", "secret": "x", "tolerance": value})] == ["tolerance"]


@pytest.mark.parametrize("secret", [None, "", [], ["ok", 3], ["ok", ""]])
def test_bad_secret(secret: Any) -> None:
    raw = {"provider": "stripe", "secret": secret}
    if secret is None:
        del raw["secret"]
    assert [k for k, _ in problems(raw)] == ["secret"]


def test_literal_standard_webhooks_secret_must_be_base64() -> None:
    found = problems({"provider": "standard-webhooks", "secret": "whsec_not base64!"})
    assert found == [("secret", "secret must be whsec_ followed by base64 (Standard Webhooks secret format)")]
    assert "not base64" not in found[0][1]
    make({"provider": "standard-webhooks", "secret": "${ANY}"})


def test_secret_list_keeps_order() -> None:
    assert make({"provider": "github", "secret": ["${A}", "${B:-b}"]}).secrets == ("${A}", "${B:-b}")
    assert make({"provider": "github", "secret": "${A}"}).secrets == ("${A}",)


# --------------------------------------------------------------------------- hint and secret_fields


def test_hints() -> None:
    assert hint(preset("stripe")) == "Stripe signs with the Stripe-Signature header (t=…,v1=…), 300 s tolerance"
    assert "X-Hub-Signature-256" in hint(preset("github"))
    assert "120 s tolerance" in hint(preset("hmac-timestamped"))
    assert "X-Sig-Timestamp" in hint(preset("hmac-timestamped"))
    assert "2 secrets" in hint(preset("github", secret=["a", "b"]))
    for name in MAC_PRESETS:
        assert "\n" not in hint(preset(name))
    assert "Authorization" in hint(make(BASIC))
    assert "'key' query parameter" in hint(make({"provider": "token", "query": "key", "secret": "x"}))


@pytest.mark.parametrize("name", MAC_PRESETS)
def test_signature_headers_are_not_secret_fields(name: str) -> None:
    assert secret_fields(preset(name)) == ((), ())


# --------------------------------------------------------------------------- property


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(MAC_PRESETS)),
    body=st.binary(min_size=1, max_size=256),
    secret=st.binary(min_size=1, max_size=64),
    index=st.integers(min_value=0),
    delta=st.integers(min_value=1, max_value=255),
)
def test_sign_then_verify_and_any_byte_change_fails(
    name: str, body: bytes, secret: bytes, index: int, delta: int
) -> None:
    value = "whsec_" + base64.b64encode(secret).decode() if name == "standard-webhooks" else secret.hex()
    config = preset(name, secret="${S}")
    env = {"S": value}
    headers = sign(config, body, env=env, now=NOW)
    verify_request(config, Request.build(body=body, headers=headers), env=env, now=NOW)
    changed = bytearray(body)
    changed[index % len(body)] ^= delta
    with pytest.raises(VerificationError):
        verify_request(config, Request.build(body=bytes(changed), headers=headers), env=env, now=NOW)
