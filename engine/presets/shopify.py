"""Shopify: ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the raw body>``."""

from __future__ import annotations

from collections.abc import Mapping

from engine.presets.base import (
    SECRET,
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
)


def verify(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float) -> None:
    secrets = keys(config, env)
    signature = mac_header(request, "X-Shopify-Hmac-Sha256", "the base64 of a 32-byte HMAC-SHA256", encoding="base64")
    require_match(secrets, [request.body], [signature])


def sign(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float, msg_id: str) -> dict[str, str]:
    (key,) = keys(config, env, first_only=True)
    return {"X-Shopify-Hmac-Sha256": b64(mac(key, request.body))}


def hint(config: VerifyConfig) -> str:
    return "Shopify signs with the X-Shopify-Hmac-Sha256 header (base64 HMAC-SHA256 of the body)"


PRESET = register(Preset(
    name="shopify",
    title="Shopify",
    summary="Shopify webhooks: base64 HMAC-SHA256 of the raw body. The secret is the app's client secret "
            "(or the one shown under Settings > Notifications > Webhooks).",
    fields=(SECRET,),
    verify=verify,
    sign=sign,
    hint=hint,
    example={"provider": "shopify", "secret": "${SHOPIFY_WEBHOOK_SECRET}"},
    carriers=nothing_sent,
))
