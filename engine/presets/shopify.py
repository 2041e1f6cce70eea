"""Shopify: ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the raw body>``."""

from __future__ import annotations

from engine.presets.base import HeaderMac, mac_preset

PRESET = mac_preset("shopify", "Shopify", HeaderMac("X-Shopify-Hmac-Sha256", encoding="base64"),
    summary="Shopify webhooks: base64 HMAC-SHA256 of the raw body. The secret is the app's client secret "
            "(or the one shown under Settings > Notifications > Webhooks).",
    hint="Shopify signs with the X-Shopify-Hmac-Sha256 header (base64 HMAC-SHA256 of the body)",
    example={"provider": "shopify", "secret": "${SHOPIFY_WEBHOOK_SECRET}"},
)
