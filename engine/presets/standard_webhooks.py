"""Standard Webhooks (Svix and the providers built on it): ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from engine.errors import VerificationError
from engine.presets import base
from engine.presets.base import SECRET, TOLERANCE, Preset, Request, VerifyConfig, nothing_sent, register


def whsec_key(secret: str) -> bytes | None:
    """Decode a Standard Webhooks secret: ``whsec_`` then base64; the prefix is optional per the spec."""
    text = secret.removeprefix("whsec_").rstrip("=")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return None
    return key or None


def verify(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float) -> None:
    secrets = base.keys(config, env)
    # Svix sends the same scheme under svix-* names; take one set whole rather than mixing the two.
    headers = request.headers
    prefix = "webhook" if "webhook-signature" in headers or "svix-signature" not in headers else "svix"
    fallback = f" (or {'svix' if prefix == 'webhook' else 'webhook'}-*)"
    try:
        msg_id = base.header(request, f"{prefix}-id")
        raw_ts = base.header(request, f"{prefix}-timestamp")
        value = base.header(request, f"{prefix}-signature")
    except VerificationError as exc:
        raise VerificationError(f"{exc}{fallback}") from None
    stamp = base.timestamp(raw_ts, f"{prefix}-timestamp")
    candidates: list[bytes] = []
    versions = 0
    for entry in value.split():
        version, sep, encoded = entry.partition(",")
        if version != "v1" or not sep:
            continue  # other schemes (v1a asymmetric signatures) may appear alongside; they are not ours
        versions += 1
        if (sig := base.unb64(encoded, 32)) is not None:
            candidates.append(sig)
    if not versions:
        raise VerificationError(f"{prefix}-signature has no v1,<base64> signature")
    if not candidates:
        raise VerificationError(f"{prefix}-signature is malformed: v1 is not the base64 of a 32-byte HMAC-SHA256")
    base.check_tolerance(stamp, now, config)
    base.require_match(secrets, [base.utf8(f"{msg_id}.{raw_ts}.") + request.body], candidates)


def sign(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float, msg_id: str) -> dict[str, str]:
    (key,) = base.keys(config, env, first_only=True)
    ts = str(int(now))
    signature = base.b64(base.mac(key, base.utf8(f"{msg_id}.{ts}.") + request.body))
    return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{signature}"}


def hint(config: VerifyConfig) -> str:
    return ("Standard Webhooks signs with the webhook-id, webhook-timestamp and webhook-signature (v1,…) headers"
            f" (svix-* accepted too){base.tolerance_hint(config)}")


PRESET = register(Preset(
    "standard-webhooks", "Standard Webhooks",
    summary="The Standard Webhooks scheme (Svix and the many providers built on it). The secret is `whsec_` "
            "followed by base64, as the provider shows it.",
    fields=(SECRET, TOLERANCE),
    verify=verify, sign=sign, hint=hint, carriers=nothing_sent, key=whsec_key, key_format="whsec_ followed by base64",
    example={"provider": "standard-webhooks", "secret": "${SVIX_WEBHOOK_SECRET}"},
))
