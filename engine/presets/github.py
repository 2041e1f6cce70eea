"""GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``, JSON or form deliveries."""

from __future__ import annotations

from typing import Any

from engine.presets.base import HeaderMac, mac_preset


def form_event(form: dict[str, Any]) -> Any:
    """A webhook left on ``application/x-www-form-urlencoded`` sends ``payload=<JSON>``: the event is that JSON."""
    payload = form.get("payload")
    if not isinstance(payload, dict | list):
        raise ValueError("GitHub form delivery has no JSON payload field")
    return payload


PRESET = mac_preset("github", "GitHub", HeaderMac("X-Hub-Signature-256", prefix="sha256="),
    summary="GitHub webhooks: HMAC-SHA256 of the raw body. Set the same secret on the GitHub webhook. "
            "Either content type works: a form delivery (`payload=<JSON>`) gives the same event as a JSON one.",
    hint="GitHub signs with the X-Hub-Signature-256 header (sha256=…)",
    example={"provider": "github", "secret": "${GITHUB_WEBHOOK_SECRET}"},
    form_event=form_event,
)
