"""Square: ``x-square-hmacsha256-signature``, base64 HMAC-SHA256 of the notification URL followed by the body."""

from __future__ import annotations

from collections.abc import Mapping

from engine.presets.base import (
    SECRET,
    URL,
    Preset,
    Request,
    VerifyConfig,
    b64,
    keys,
    mac,
    mac_header,
    nothing_sent,
    register,
    require_match,
    signed_url,
    utf8,
)


def verify(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float) -> None:
    secrets = keys(config, env)
    signature = mac_header(request, "X-Square-HmacSha256-Signature", "the base64 of a 32-byte HMAC-SHA256",
                           encoding="base64")
    require_match(secrets, [utf8(signed_url(request, config, env)) + request.body], [signature])


def sign(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float, msg_id: str) -> dict[str, str]:
    (key,) = keys(config, env, first_only=True)
    return {"X-Square-HmacSha256-Signature": b64(mac(key, utf8(signed_url(request, config, env)) + request.body))}


def hint(config: VerifyConfig) -> str:
    url = f"the URL {config.options['url']}" if "url" in config.options else "the URL as received"
    return ("Square signs with the X-Square-HmacSha256-Signature header (base64 HMAC-SHA256 of "
            f"{url} followed by the body)")


PRESET = register(Preset(
    name="square",
    title="Square",
    summary="Square webhook subscriptions: base64 HMAC-SHA256 of the notification URL followed by the raw body. "
            "The secret is the subscription's signature key. Square signs the notification URL exactly as "
            "entered in the Developer Console: set `url` to it when Hookline sits behind a proxy.",
    fields=(SECRET, URL),
    verify=verify,
    sign=sign,
    hint=hint,
    example={"provider": "square", "secret": "${SQUARE_SIGNATURE_KEY}",
             "url": "https://hooks.example.com/hooks/square-payments"},
    carriers=nothing_sent,
))
