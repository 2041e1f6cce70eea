"""Slack: ``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">`` and ``X-Slack-Request-Timestamp``."""

from __future__ import annotations

from collections.abc import Mapping

from engine.presets.base import (
    SECRET,
    TOLERANCE,
    Preset,
    Request,
    VerifyConfig,
    check_tolerance,
    header,
    keys,
    mac,
    mac_header,
    nothing_sent,
    register,
    require_match,
    timestamp,
    tolerance_hint,
)


def verify(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float) -> None:
    secrets = keys(config, env)
    signature = mac_header(request, "X-Slack-Signature", "v0=<64 hex digits>", scheme="v0")
    raw_ts = header(request, "X-Slack-Request-Timestamp")
    check_tolerance(timestamp(raw_ts, "X-Slack-Request-Timestamp"), now, config)
    require_match(secrets, [f"v0:{raw_ts}:".encode() + request.body], [signature])


def sign(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float, msg_id: str) -> dict[str, str]:
    (key,) = keys(config, env, first_only=True)
    ts = str(int(now))
    return {"X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": f"v0={mac(key, f'v0:{ts}:'.encode() + request.body).hex()}"}


def hint(config: VerifyConfig) -> str:
    return ("Slack signs with the X-Slack-Signature (v0=…) and X-Slack-Request-Timestamp headers"
            f"{tolerance_hint(config)}")


PRESET = register(Preset(
    name="slack",
    title="Slack",
    summary="Slack Events API, slash commands and interactivity, signed with the app's signing secret. "
            "Slack's `url_verification` challenge is answered without starting a run. Interactivity posts "
            "a form with one `payload` field: the event is `{\"payload\": {...}}` (decoded), slash commands "
            "give their form fields (`command`, `text`, ...).",
    fields=(SECRET, TOLERANCE),
    verify=verify,
    sign=sign,
    hint=hint,
    example={"provider": "slack", "secret": "${SLACK_SIGNING_SECRET}"},
    carriers=nothing_sent,
))
