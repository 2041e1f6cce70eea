"""``<flows_dir>/connections.yaml`` -> ConnectionSet, every problem with its file, line and key path.

The file is parsed like a flow (engine.loader.parse_yaml gives the lines), and each entry is checked
against its type's declared options. A bad entry is kept out with its errors while the others load:
only the flows naming it are affected (I11). A flow naming a connection that is unknown or broken
is itself invalid (:func:`check_flow`): found when it loads, not on the first event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine import envrefs
from engine.connections import CONNECTIONS_FILE, REGISTRY, Connection, Option
from engine.errors import FlowError, FlowInvalid
from engine.loader import parse_yaml
from engine.model import Flow
from engine.steps import parse_duration

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,99}$")
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TOP_KEYS = ("connections",)


@dataclass
class ConnectionSet:
    """The connections of one deployment: the valid ones by name, the broken ones with their errors."""

    file: str = ""
    connections: dict[str, Connection] = field(default_factory=dict)
    broken: dict[str, list[FlowError]] = field(default_factory=dict)
    errors: list[FlowError] = field(default_factory=list)  # every problem, the file's own included

    def get(self, name: str) -> Connection | None:
        return self.connections.get(name)

    def env_warnings(self, env: Mapping[str, str]) -> list[str]:
        """One line per ``${VAR}`` a connection needs that is unset here and has no default."""
        out: list[str] = []
        for conn in self.connections.values():
            for value in conn.options.values():
                for text in value if isinstance(value, list) else [value]:
                    for ref in envrefs.refs(str(text)):
                        line = f"{conn.where}: connection {conn.name}: environment variable {ref.name} is not set " \
                               "and has no default"
                        if not env.get(ref.name) and ref.default is None and line not in out:
                            out.append(line)
        return out


def connections_file(directory: str | Path) -> Path:
    """Where a flows directory (or a single flow file's directory) keeps its connections."""
    root = Path(directory)
    return (root.parent if root.is_file() else root) / CONNECTIONS_FILE


def load_connections_file(path: str | Path) -> ConnectionSet:
    """Read and load connections.yaml; a missing file is an empty set (a deployment without connections)."""
    p = Path(path)
    if not p.exists():
        return ConnectionSet()
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return ConnectionSet(str(p), errors=[FlowError("not a UTF-8 text file", file=str(p))])
    except OSError as exc:
        return ConnectionSet(str(p), errors=[FlowError(f"cannot read: {exc.strerror}", file=str(p))])
    return load_connections(text, str(p))


def load_connections(text: str, file: str = CONNECTIONS_FILE) -> ConnectionSet:
    """Parse and validate connections.yaml's text; problems are collected, never raised."""
    out = ConnectionSet(file)
    try:
        raw, doc = parse_yaml(text, file)
    except FlowInvalid as exc:
        out.errors = list(exc.errors)
        return out
    out.errors.extend(doc.errors)
    if raw is None:
        return out
    if not isinstance(raw, dict) or not isinstance(raw.get("connections", {}), dict):
        out.errors.append(FlowError("expected `connections:`, a mapping of names to connections", file=file,
                                    line=doc.line("connections"), path="connections"))
        return out
    for key in raw:
        if key not in TOP_KEYS:
            out.errors.append(FlowError(f"unknown key {key!r}; expected: connections", file=file, line=doc.line(key),
                                        path=key))
    for name, entry in (raw.get("connections") or {}).items():
        path = f"connections.{name}"
        problems: list[tuple[str, str]] = []
        conn = _connection(str(name), entry, problems)
        errors = [FlowError(message, file=file, line=doc.line(f"{path}.{key}" if key else path),
                            path=f"{path}.{key}" if key else path) for key, message in problems]
        if errors or conn is None:
            out.broken[str(name)] = errors
            out.errors.extend(errors)
        else:
            out.connections[conn.name] = Connection(conn.name, conn.type, conn.options, file, doc.line(path))
    return out


def _connection(name: str, entry: Any, problems: list[tuple[str, str]]) -> Connection | None:
    if not NAME_RE.match(name):
        problems.append(("", "a connection name is a letter then letters, digits, _ or - (steps use it as "
                             "connection: <name>)"))
    if not isinstance(entry, dict):
        problems.append(("", f"a connection is a mapping with a type: one of {', '.join(sorted(REGISTRY))}"))
        return None
    kind_name = entry.get("type")
    if not isinstance(kind_name, str) or kind_name not in REGISTRY:
        problems.append(("type", f"unknown connection type {kind_name!r}; expected one of: "
                                 f"{', '.join(sorted(REGISTRY))}"))
        return None
    kind = REGISTRY[kind_name]
    allowed = {o.name for o in kind.options}
    for key in entry:
        if key != "type" and key not in allowed:
            problems.append((str(key), f"unknown key {str(key)!r} for type {kind_name}; allowed: "
                                       f"{', '.join(o.name for o in kind.options)}"))
    options: dict[str, Any] = {}
    for option in kind.options:
        value = entry.get(option.name)
        if value is None:
            if option.required:
                problems.append((option.name, f"required: {option.help}"))
            continue
        try:
            options[option.name] = _value(option, value)
        except ValueError as exc:
            problems.append((option.name, str(exc)))
    if not problems and kind.check is not None:
        problems.extend(kind.check(options))
    return Connection(name, kind_name, options) if not problems else None


def _value(option: Option, value: Any) -> Any:
    """The option's value as stored on the Connection (strings keep their ``${VAR}``s); ValueError if wrong."""
    if option.kind == "list":
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(i, str | int) and not isinstance(i, bool) for i in items):
            raise ValueError("expected a list of strings")
        return [str(i) for i in items]
    if option.kind == "duration":
        return parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a string")
    text = str(value)
    if option.kind == "secret" and not envrefs.refs(text):
        raise ValueError("must be a ${VAR} reference: secrets are read from the environment, never written here")
    if option.kind == "enum":
        match = [c for c in option.choices if c == text.lower()]
        if not match:
            raise ValueError(f"expected one of {', '.join(option.choices)}, got {text!r}")
        return match[0]
    if option.kind == "header" and not envrefs.refs(text) and not HEADER_NAME.fullmatch(text):
        raise ValueError(f"{text[:100]!r} is not a valid HTTP header name")
    return text


# --- flows naming connections ---------------------------------------------------------------------


USE_PATH = re.compile(r"\]\.http\.connection$")  # steps[2].http.connection, nested step lists included
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class ConnectionUse:
    """One http step naming a connection: the name, and where the ``connection:`` key is."""

    name: str
    path: str
    line: int | None


@lru_cache(maxsize=512)
def connection_uses(source: str, file: str) -> tuple[ConnectionUse, ...]:
    """Every ``connection:`` of an http step in a flow's source, nested steps and on_failure included.

    Read from the YAML itself (its key paths carry their lines), so it does not depend on how steps nest.
    """
    try:
        raw, doc = parse_yaml(source, file)
    except FlowInvalid:
        return ()
    uses = []
    for path, line in doc.lines.items():
        if USE_PATH.search(path):
            value = _at(raw, path)
            if isinstance(value, str):
                uses.append(ConnectionUse(value, path, line))
    return tuple(uses)


def _at(raw: Any, path: str) -> Any:
    for key, index in _PATH_PART.findall(path):
        if index:
            raw = raw[int(index)] if isinstance(raw, list) and int(index) < len(raw) else None
        else:
            raw = raw.get(key) if isinstance(raw, dict) else None
    return raw


def check_flow(flow: Flow, connections: ConnectionSet) -> list[FlowError]:
    """A FlowError (file:line of the ``connection:`` key) per step naming an unknown or broken connection."""
    errors: list[FlowError] = []
    for use in connection_uses(flow.source, flow.path):
        if use.name in connections.connections:
            continue
        if use.name in connections.broken:
            first = connections.broken[use.name][0] if connections.broken[use.name] else None
            message = f"connection {use.name!r} is invalid" + (f" ({first})" if first else "")
        elif not connections.file:
            message = f"unknown connection {use.name!r}: there is no {CONNECTIONS_FILE} next to the flows"
        else:
            known = ", ".join(sorted(connections.connections)) or "none"
            message = f"unknown connection {use.name!r}; {connections.file} defines: {known}"
        errors.append(FlowError(message, file=flow.path, line=use.line, path=use.path))
    return errors
