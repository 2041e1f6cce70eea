"""``${NAME}`` and ``${NAME:-default}`` references to environment variables.

Values read this way are secrets: callers resolve them at the last moment and
record which values they used so the store can redact them (invariant I9).
``$${`` is a literal ``${``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from engine.errors import MissingEnvError

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^}\\]|\\.)*))?\}")


@dataclass(frozen=True)
class EnvRef:
    name: str
    default: str | None

    def resolve(self, env: Mapping[str, str], where: str = "") -> str:
        value = env.get(self.name)
        if value is not None and value != "":
            return value
        if self.default is not None:
            return self.default
        raise MissingEnvError(self.name, where)

    def is_secret_in(self, env: Mapping[str, str]) -> bool:
        """True when the value comes from the environment (defaults are written in the flow, not secret)."""
        return bool(env.get(self.name))


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
        default = match.group(2)
        if default is not None:
            default = re.sub(r"\\(.)", r"\1", default)
        parts.append(EnvRef(match.group(1), default))
        pos = match.end()
    if literal:
        parts.append(literal)
    return parts


def refs(text: str) -> list[EnvRef]:
    return [p for p in split(text) if isinstance(p, EnvRef)]


def expand(text: str, env: Mapping[str, str], where: str = "") -> str:
    """Replace every reference with its value; raise MissingEnvError naming the first missing one."""
    return "".join(p if isinstance(p, str) else p.resolve(env, where) for p in split(text))
