"""A static shared token in a header or a query parameter, for senders that cannot sign."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import VerificationError
from engine.presets.base import (
    Carriers,
    Field,
    Preset,
    Request,
    VerifyConfig,
    count,
    equal,
    header,
    keys,
    register,
    resolve_one,
    unavailable,
    utf8,
)


def check(raw: Mapping[str, Any], options: dict[str, Any], problems: list[tuple[str, str]]) -> None:
    if "header" in raw and "query" in raw:
        problems.append(("", "token takes either header or query, not both"))
    elif "header" not in raw and "query" not in raw:
        problems.append(("", "token needs header: <header name> or query: <parameter name>"))


def verify(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float) -> None:
    secrets = keys(config, env)
    if "query" in config.options:
        name = str(config.options["query"])
        value = request.query.get(name)
        if value is None:
            raise VerificationError(f"missing query parameter {name!r}")
    else:
        value = header(request, str(config.options["header"]))
    given = utf8(value)
    matched = False
    for secret in secrets:
        matched |= equal(given, secret)
    if not matched:
        raise VerificationError(f"token does not match (checked {count(len(secrets), 'secret')})")


def sign(request: Request, config: VerifyConfig, env: Mapping[str, str], now: float, msg_id: str) -> dict[str, str]:
    if "query" in config.options:
        raise ValueError(f"the token goes in the query parameter {config.options['query']!r}, not a header; "
                         "add it to the URL")
    token, reason = resolve_one(config.secrets[0] if config.secrets else "", env)
    if token is None:
        raise unavailable([reason])
    return {str(config.options["header"]): token}


def carriers(config: VerifyConfig) -> Carriers:
    if "query" in config.options:
        return (), (str(config.options["query"]),)
    return (str(config.options["header"]),), ()


def hint(config: VerifyConfig) -> str:
    if "query" in config.options:
        return f"a static token in the {config.options['query']!r} query parameter"
    return f"a static token in the {config.options['header']} header"


PRESET = register(Preset(
    "token", "Token",
    summary="A static shared token in a header or a query parameter, for senders that cannot sign. "
            "The header or parameter is redacted before the request is stored.",
    fields=(
        Field("header", "header", "the header carrying the token (give `header` or `query`, not both)"),
        Field("query", "str", "the query parameter carrying the token",
              what="the query parameter carrying the token, e.g. token"),
        Field("secret", "secret", "the expected token; a list while rotating", required=True, secret=True),
    ),
    verify=verify, sign=sign, hint=hint, carriers=carriers, check=check, binds_body=False,
    example={"provider": "token", "header": "X-Webhook-Token", "secret": "${PARTNER_TOKEN}"},
))
