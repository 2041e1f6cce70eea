"""``${NAME}`` and ``${NAME:-default}`` references to environment variables.

Values read this way are secrets: callers resolve them at the last moment and
record which values they used so the store can redact them (invariant I9).
``$${`` is a literal ``${``.

One name is built in: ``${HOOKLINE_URL}``, this Hookline's own base URL (``hookline serve`` and
``web`` set it to the address they listen on; else ``http://127.0.0.1:8000``). It is never missing,
never a secret, and may be used inside another reference's default, so an example can say
``${INVENTORY_URL:-${HOOKLINE_URL}/sandbox/inventory}`` and work on whatever port it is served.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from engine.errors import MissingEnvError

SELF_URL = "HOOKLINE_URL"
SELF_URL_DEFAULT = "http://127.0.0.1:8000"
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:\$\{HOOKLINE_URL\}|[^}\\]|\\.)*))?\}")


@dataclass(frozen=True)
class EnvRef:
    name: str
    default: str | None

    def resolve(self, env: Mapping[str, str], where: str = "") -> str:
        value = env.get(self.name)
        if value is not None and value != "":
            return value.rstrip("/") if self.name == SELF_URL else value
        if self.default is not None:
            return self.default.replace("${HOOKLINE_URL}", self_url(env)) if "${" in self.default else self.default
        raise MissingEnvError(self.name, where)

    def is_secret_in(self, env: Mapping[str, str]) -> bool:
        """True when the value comes from the environment (defaults are written in the flow, not secret;
        nor is the server's own address)."""
        return self.name != SELF_URL and bool(env.get(self.name))


def self_url(env: Mapping[str, str]) -> str:
    """``${HOOKLINE_URL}``: the environment's value (as hookline serve/web set it), else the default address."""
    return (env.get(SELF_URL) or SELF_URL_DEFAULT).rstrip("/")


def split(text: str) -> list[str | EnvRef]:
    """Split text into literal strings and EnvRefs, honouring the ``$${`` escape."""
    parts: list[str | EnvRef] = []
    pos = 0
    literal = ""
    while True:
        match = ENV_REF.search(text, pos)
        if match is None:
            literal += text[pos:]
            break
        start = match.start()
        if start > 0 and text[start - 1] == "$":
            literal += text[pos:start] + text[start + 1 : match.end()]
            pos = match.end()
            continue
        literal += text[pos:start]
        if literal:
            parts.append(literal)
            literal = ""
        name, default = match.group(1), match.group(2)
        if default is not None:
            default = re.sub(r"\\(.)", r"\1", default)
        elif name == SELF_URL:
            default = SELF_URL_DEFAULT  # built in: never missing (validate, fixtures, the flows page agree)
        parts.append(EnvRef(name, default))
        pos = match.end()
    if literal:
        parts.append(literal)
    return parts


def refs(text: str) -> list[EnvRef]:
    return [p for p in split(text) if isinstance(p, EnvRef)]


def expand(text: str, env: Mapping[str, str], where: str = "") -> str:
    """Replace every reference with its value; raise MissingEnvError naming the first missing one."""
    return "".join(p if isinstance(p, str) else p.resolve(env, where) for p in split(text))
