"""Generic HMAC: any provider that sends an HMAC of the body (optionally ``<timestamp>.<body>``) in a header."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.presets.base import (
    ALGORITHMS,
    DEFAULT_TOLERANCE,
    SECRET,
    Field,
    HeaderMac,
    Preset,
    Request,
    VerifyConfig,
    nothing_sent,
    register,
    tolerance_hint,
)

ENCODINGS = ("hex", "base64")


def check(raw: Mapping[str, Any], options: dict[str, Any], problems: list[tuple[str, str]]) -> None:
    """The timestamp header must differ from the signature's, and tolerance only means something with it."""
    if "timestamp_header" in raw:
        ts_header, sig_header = options.get("timestamp_header"), options.get("header")
        if ts_header is not None and sig_header is not None and ts_header.lower() == sig_header.lower():
            problems.append(("timestamp_header", "must differ from header"))
        options.setdefault("tolerance", DEFAULT_TOLERANCE)
    elif "tolerance" in raw:
        problems.append(("tolerance", "only applies together with timestamp_header"))


def _scheme(config: VerifyConfig) -> HeaderMac:
    """The flow's options as a HeaderMac. With a timestamp header the timestamp is bound into the MAC as
    ``<ts>.<body>``, as Stripe does; otherwise a captured request could be replayed with a fresh timestamp."""
    options = config.options
    stamp = options.get("timestamp_header")
    return HeaderMac(str(options["header"]), prefix=str(options.get("prefix", "")), encoding=str(options.get("encoding", "hex")),
                     algorithm=str(options.get("algorithm", "sha256")), timestamp_header=None if stamp is None else str(stamp),
                     signs="" if stamp is None else "{timestamp}.", explain=True)


def verify(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float) -> None:
    _scheme(config).verify(request, config, env, now)


def sign(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float, msg_id: str) -> dict[str, str]:
    return _scheme(config).sign(request, config, env, now, msg_id)


def hint(config: VerifyConfig) -> str:
    options = config.options
    algorithm = str(options.get("algorithm", "sha256")).upper().replace("SHA", "SHA-")
    signed = f"'<{options['timestamp_header']}>.<body>'" if "timestamp_header" in options else "the body"
    prefix = f" after the prefix {options.get('prefix', '')!r}" if options.get("prefix", "") else ""
    text = f"HMAC-{algorithm} ({options.get('encoding', 'hex')}) of {signed} in the {options['header']} header{prefix}"
    return text + tolerance_hint(config) if "timestamp_header" in options else text


PRESET = register(Preset(
    "hmac", "HMAC",
    summary="Any provider that sends an HMAC of the body (optionally `<timestamp>.<body>`) in a header of its own.",
    fields=(
        Field("header", "header", "the header carrying the signature", required=True),
        Field("algorithm", "enum", "the hash of the HMAC", default="sha256", choices=tuple(ALGORITHMS)),
        Field("encoding", "enum", "how the signature is written", default="hex", choices=ENCODINGS),
        Field("prefix", "text", "text before the signature in the header, e.g. `sha256=`", default="",
              what="'sha256='"),
        Field("timestamp_header", "header", "a header with a Unix timestamp; then `<timestamp>.<body>` is signed "
              "and its age checked"),
        Field("tolerance", "duration", "only with `timestamp_header`: how far the timestamp may be from now, either "
              f"way; default {DEFAULT_TOLERANCE:g} s"),
        SECRET,
    ),
    verify=verify, sign=sign, hint=hint, carriers=nothing_sent, check=check,
    example={"provider": "hmac", "header": "X-Signature", "prefix": "sha256=", "timestamp_header": "X-Timestamp",
             "secret": "${PARTNER_WEBHOOK_SECRET}"},
))
