"""Stripe: ``Stripe-Signature: t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``."""

from __future__ import annotations

from collections.abc import Mapping

from engine.errors import VerificationError
from engine.presets import base
from engine.presets.base import SECRET, TOLERANCE, Preset, Request, VerifyConfig, nothing_sent, register


def verify(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float) -> None:
    secrets = base.keys(config, env)
    value = base.header(request, "Stripe-Signature")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in value.split(","):
        key, sep, part = item.strip().partition("=")
        if not sep:
            raise VerificationError("Stripe-Signature is malformed: expected t=<timestamp>,v1=<signature>")
        if key == "t":
            timestamps.append(part)
        elif key == "v1":
            signatures.append(part)
    if len(timestamps) != 1:
        raise VerificationError("Stripe-Signature is malformed: expected exactly one t=<timestamp>")
    stamp = base.timestamp(timestamps[0], "Stripe-Signature t=")
    if not signatures:
        raise VerificationError("Stripe-Signature has no v1 signature")
    candidates = [sig for s in signatures if (sig := base.unhex(s, 32)) is not None]
    if not candidates:
        raise VerificationError("Stripe-Signature is malformed: v1 is not 64 hex digits")
    base.check_tolerance(stamp, now, config)
    base.require_match(secrets, [f"{timestamps[0]}.".encode() + request.body], candidates)


def sign(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float, msg_id: str) -> dict[str, str]:
    (key,) = base.keys(config, env, first_only=True)
    ts = str(int(now))
    return {"Stripe-Signature": f"t={ts},v1={base.mac(key, f'{ts}.'.encode() + request.body).hex()}"}


def hint(config: VerifyConfig) -> str:
    return f"Stripe signs with the Stripe-Signature header (t=…,v1=…){base.tolerance_hint(config)}"


PRESET = register(Preset(
    "stripe", "Stripe",
    summary="Stripe webhook endpoints: `t=<timestamp>,v1=<HMAC-SHA256 of \"<timestamp>.<body>\">`. "
            "The secret is the endpoint's signing secret (`whsec_...`), used as is.",
    fields=(SECRET, TOLERANCE),
    verify=verify, sign=sign, hint=hint, carriers=nothing_sent,
    example={"provider": "stripe", "secret": "${STRIPE_WEBHOOK_SECRET}", "tolerance": "5m"},
))
