"""Slack: ``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">`` and ``X-Slack-Request-Timestamp``."""

from __future__ import annotations

from engine.presets.base import HeaderMac, mac_preset

PRESET = mac_preset(
    "slack", "Slack",
    HeaderMac("X-Slack-Signature", prefix="v0=", timestamp_header="X-Slack-Request-Timestamp", signs="v0:{timestamp}:"),
    summary="Slack Events API, slash commands and interactivity, signed with the app's signing secret. "
            "Slack's `url_verification` challenge is answered without starting a run. Interactivity posts "
            "a form with one `payload` field: the event is `{\"payload\": {...}}` (decoded), slash commands "
            "give their form fields (`command`, `text`, ...).",
    hint="Slack signs with the X-Slack-Signature (v0=…) and X-Slack-Request-Timestamp headers{tolerance}",
    example={"provider": "slack", "secret": "${SLACK_SIGNING_SECRET}"},
)
