"""Generic HMAC: any provider that sends an HMAC of the body (optionally ``<timestamp>.<body>``) in a header."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import VerificationError
from engine.presets.base import (
    ALGORITHMS,
    DEFAULT_TOLERANCE,
    SECRET,
    Field,
    Preset,
    Request,
    VerifyConfig,
    b64,
    check_tolerance,
    header,
    keys,
    mac,
    nothing_sent,
    register,
    require_match,
    timestamp,
    tolerance_hint,
    unb64,
    unhex,
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


def _message(timestamp_value: str | None, body: bytes) -> bytes:
    # With a timestamp header the timestamp is bound into the MAC as "<ts>.<body>", as Stripe does;
    # otherwise a captured request could be replayed with a fresh timestamp.
    return body if timestamp_value is None else f"{timestamp_value}.".encode() + body


def verify(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float) -> None:
    secrets = keys(config, env)
    name = str(config.options["header"])
    algorithm = str(config.options.get("algorithm", "sha256"))
    encoding = str(config.options.get("encoding", "hex"))
    prefix = str(config.options.get("prefix", ""))
    value = header(request, name)
    if not value.startswith(prefix):
        raise VerificationError(f"{name} is malformed: expected the prefix {prefix!r}")
    value = value[len(prefix) :]
    size = ALGORITHMS[algorithm]().digest_size
    signature = unhex(value, size) if encoding == "hex" else unb64(value, size)
    if signature is None:
        raise VerificationError(f"{name} is malformed: expected the {encoding} of a {size}-byte {algorithm} HMAC")
    raw_ts: str | None = None
    if "timestamp_header" in config.options:
        ts_name = str(config.options["timestamp_header"])
        raw_ts = header(request, ts_name)
        check_tolerance(timestamp(raw_ts, ts_name), now, config)
    require_match(secrets, [_message(raw_ts, request.body)], [signature], algorithm)


def sign(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float, msg_id: str) -> dict[str, str]:
    (key,) = keys(config, env, first_only=True)
    algorithm = str(config.options.get("algorithm", "sha256"))
    out: dict[str, str] = {}
    ts: str | None = None
    if "timestamp_header" in config.options:
        ts = str(int(now))
        out[str(config.options["timestamp_header"])] = ts
    digest = mac(key, _message(ts, request.body), algorithm)
    encoded = digest.hex() if config.options.get("encoding", "hex") == "hex" else b64(digest)
    out[str(config.options["header"])] = str(config.options.get("prefix", "")) + encoded
    return out


def hint(config: VerifyConfig) -> str:
    options = config.options
    algorithm = str(options.get("algorithm", "sha256")).upper().replace("SHA", "SHA-")
    signed = f"'<{options['timestamp_header']}>.<body>'" if "timestamp_header" in options else "the body"
    prefix = f" after the prefix {options.get('prefix', '')!r}" if options.get("prefix", "") else ""
    text = f"HMAC-{algorithm} ({options.get('encoding', 'hex')}) of {signed} in the {options['header']} header{prefix}"
    return text + tolerance_hint(config) if "timestamp_header" in options else text


PRESET = register(Preset(
    name="hmac",
    title="HMAC",
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
    verify=verify,
    sign=sign,
    hint=hint,
    example={"provider": "hmac", "header": "X-Signature", "prefix": "sha256=", "timestamp_header": "X-Timestamp",
             "secret": "${PARTNER_WEBHOOK_SECRET}"},
    carriers=nothing_sent,
    check=check,
))
