"""Square: ``x-square-hmacsha256-signature``, base64 HMAC-SHA256 of the notification URL followed by the body."""

from __future__ import annotations

from engine.presets.base import HeaderMac, mac_preset

PRESET = mac_preset("square", "Square", HeaderMac("X-Square-HmacSha256-Signature", encoding="base64", signs="{url}"),
    summary="Square webhook subscriptions: base64 HMAC-SHA256 of the notification URL followed by the raw body. "
            "The secret is the subscription's signature key. Square signs the notification URL exactly as "
            "entered in the Developer Console: set `url` to it when Hookline sits behind a proxy.",
    hint="Square signs with the X-Square-HmacSha256-Signature header (base64 HMAC-SHA256 of {url} followed by the body)",
    example={"provider": "square", "secret": "${SQUARE_SIGNATURE_KEY}",
             "url": "https://hooks.example.com/hooks/square-payments"},
)
