"""Signed forwarding: ``standard-webhooks`` and ``hmac_signature`` sign the exact bytes an http step sends.

So Hookline can forward events to receivers that verify them: the Standard Webhooks scheme
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64>``; its libraries verify it),
or a generic HMAC header with the same options as the ``hmac`` verification preset, so a Hookline
flow verifying with that preset accepts what another one signs. The message id is the step's
Idempotency-Key: the same on every retry, as the Standard Webhooks spec asks. The timestamp is the
attempt's own, so a retry hours later is still within a receiver's tolerance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from engine.connections import ConnectionFailed, ConnectionType, Option, Outbound, Use, register, set_header

ALGORITHMS: dict[str, Callable[[], Any]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def whsec_key(secret: str) -> bytes | None:
    """A Standard Webhooks secret's key: ``whsec_`` (optional) then base64; None when it is not that."""
    text = secret.removeprefix("whsec_").rstrip("=")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        return None
    return key or None


def _standard(request: Outbound, use: Use) -> None:
    secret = use.value("secret")
    use.secret(secret, "secret")
    key = whsec_key(secret)
    if key is None:
        raise ConnectionFailed(f"connection {use.name}: the secret is not whsec_ followed by base64 "
                               "(Standard Webhooks secret format)")
    msg_id = f"msg_{request.message_id}"
    timestamp = str(int(use.now()))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + request.content, hashlib.sha256).digest()
    signature = base64.b64encode(mac).decode()
    use.secret(signature)
    set_header(request.headers, "webhook-id", msg_id)
    set_header(request.headers, "webhook-timestamp", timestamp)
    set_header(request.headers, "webhook-signature", f"v1,{signature}")


def _hmac(request: Outbound, use: Use) -> None:
    secret = use.value("secret")
    use.secret(secret, "secret")
    message = request.content
    timestamp_header = use.value("timestamp_header")
    if timestamp_header:
        # bound into the MAC as "<ts>.<body>", as the hmac preset checks: a fresh timestamp cannot be
        # pasted onto a captured request
        timestamp = str(int(use.now()))
        set_header(request.headers, timestamp_header, timestamp)
        message = f"{timestamp}.".encode() + message
    mac = hmac.new(secret.encode(), message, ALGORITHMS[use.value("algorithm")]).digest()
    encoded = mac.hex() if use.value("encoding") == "hex" else base64.b64encode(mac).decode()
    use.secret(encoded)
    set_header(request.headers, use.value("header"), use.value("prefix") + encoded)


register(ConnectionType(
    name="standard-webhooks",
    help="Sign each request the Standard Webhooks way (webhook-id, webhook-timestamp, webhook-signature).",
    options=(
        Option("secret", "secret", "Signing secret: whsec_ followed by base64, as receivers expect.", required=True,
               example="${PARTNER_SIGNING_SECRET}"),
    ),
    apply=_standard,
    example="partner:\n  type: standard-webhooks\n  secret: ${PARTNER_SIGNING_SECRET}",
))

register(ConnectionType(
    name="hmac_signature",
    help="An HMAC of the body (optionally `<timestamp>.<body>`) in a header; the `hmac` preset's options.",
    options=(
        Option("secret", "secret", "HMAC key (its UTF-8 bytes).", required=True, example="${RECEIVER_SECRET}"),
        Option("header", "header", "Header carrying the signature.", default="X-Signature",
               example="X-Hub-Signature-256"),
        Option("algorithm", "enum", "Hash function.", default="sha256", choices=tuple(ALGORITHMS)),
        Option("encoding", "enum", "How the MAC is written.", default="hex", choices=("hex", "base64")),
        Option("prefix", "text", "Text before the encoded MAC.", default="", example="sha256="),
        Option("timestamp_header", "header", "When set: send the Unix time there and sign `<timestamp>.<body>`.",
               example="X-Signature-Timestamp"),
    ),
    apply=_hmac,
    example="receiver:\n  type: hmac_signature\n  secret: ${RECEIVER_SECRET}\n  header: X-Hub-Signature-256\n"
            "  prefix: sha256=",
))
