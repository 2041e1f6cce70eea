"""GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``, JSON or form deliveries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.presets.base import (
    SECRET,
    Preset,
    Request,
    VerifyConfig,
    keys,
    mac,
    mac_header,
    nothing_sent,
    register,
    require_match,
)


def verify(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float) -> None:
    secrets = keys(config, env)
    signature = mac_header(request, "X-Hub-Signature-256", "sha256=<64 hex digits>", scheme="sha256")
    require_match(secrets, [request.body], [signature])


def sign(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float, msg_id: str) -> dict[str, str]:
    (key,) = keys(config, env, first_only=True)
    return {"X-Hub-Signature-256": f"sha256={mac(key, request.body).hex()}"}


def hint(config: VerifyConfig) -> str:
    return "GitHub signs with the X-Hub-Signature-256 header (sha256=…)"


def form_event(form: dict[str, Any]) -> Any:
    """A webhook left on ``application/x-www-form-urlencoded`` sends ``payload=<JSON>``: the event is that JSON."""
    payload = form.get("payload")
    if not isinstance(payload, dict | list):
        raise ValueError("GitHub form delivery has no JSON payload field")
    return payload


PRESET = register(Preset(
    name="github",
    title="GitHub",
    summary="GitHub webhooks: HMAC-SHA256 of the raw body. Set the same secret on the GitHub webhook. "
            "Either content type works: a form delivery (`payload=<JSON>`) gives the same event as a JSON one.",
    fields=(SECRET,),
    verify=verify,
    sign=sign,
    hint=hint,
    example={"provider": "github", "secret": "${GITHUB_WEBHOOK_SECRET}"},
    carriers=nothing_sent,
    form_event=form_event,
))
