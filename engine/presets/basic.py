"""HTTP basic auth (``Authorization: Basic ...``), for senders that only support a username and password."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from engine.errors import VerificationError
from engine.presets.base import (
    Carriers,
    Field,
    Preset,
    Request,
    VerifyConfig,
    equal,
    header,
    register,
    resolve_one,
    unavailable,
    utf8,
)


def _credentials(config: VerifyConfig, env: Mapping[str, str]) -> tuple[str, str]:
    username, reason_user = resolve_one(str(config.options.get("username", "")), env)
    password, reason_pass = resolve_one(str(config.options.get("password", "")), env)
    if username is None or password is None:
        raise unavailable([r for r in (reason_user, reason_pass) if r])
    return username, password


def verify(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float) -> None:
    username, password = _credentials(config, env)
    scheme, _, credentials = header(request, "Authorization").partition(" ")
    if scheme.lower() != "basic":
        raise VerificationError("Authorization is not HTTP basic credentials")
    malformed = VerificationError("Authorization is malformed: expected Basic <base64 of username:password>")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except ValueError:  # binascii.Error, non-ASCII text or UnicodeDecodeError
        raise malformed from None
    given_user, sep, given_password = decoded.partition(":")
    if not sep:
        raise malformed
    # Both comparisons always run, so timing does not tell whether the username was right.
    user_ok = equal(utf8(given_user), utf8(username))
    password_ok = equal(utf8(given_password), utf8(password))
    if not (user_ok & password_ok):
        raise VerificationError("username or password does not match")


def sign(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float, msg_id: str) -> dict[str, str]:
    username, password = _credentials(config, env)
    return {"Authorization": "Basic " + base64.b64encode(utf8(f"{username}:{password}")).decode()}


def carriers(config: VerifyConfig) -> Carriers:
    return ("authorization",), ()


def hint(config: VerifyConfig) -> str:
    return "HTTP basic auth in the Authorization header"


PRESET = register(Preset(
    "basic", "Basic auth",
    summary="HTTP basic auth (`Authorization: Basic ...`), for senders that only support a username and password.",
    fields=(
        Field("username", "str", "the expected username; `${VAR}` allowed", required=True, secret=True,
              what="the basic-auth username, e.g. ${HOOK_USERNAME}"),
        Field("password", "str", "the expected password; `${VAR}` allowed", required=True, secret=True,
              what="the basic-auth password, e.g. ${HOOK_PASSWORD}"),
    ),
    verify=verify, sign=sign, hint=hint, carriers=carriers, binds_body=False,
    example={"provider": "basic", "username": "${HOOK_USER}", "password": "${HOOK_PASSWORD}"},
))
