"""Flow values compiled once at load and rendered per run.

A value in a flow file is one of:
- a literal (number, bool, null, or a string with nothing special in it);
- ``$.json.path`` over the event body (jsonpath-ng, filters included): one match gives the
  value, several a list, none null; ``$$`` escapes a literal dollar;
- ``"{{ expression }}"`` alone: the expression's native value (number, list, dict...);
- a block template (with ``{% %}``) whose text is a JSON (or Python literal) list or mapping:
  that list or mapping, so ``{% for %}`` can build request bodies;
- any other text mixing ``{{ }}``/``{% %}`` and literals: a string;
- ``${NAME}`` / ``${NAME:-default}`` anywhere in a string: an environment variable read at
  render time. Its value is a secret: the RenderContext collects it so callers can redact it.

Jinja2 runs in engine.jinjaenv's immutable sandbox: templates come from flow files but render
untrusted event data, so attribute escapes, unbounded work, slow renders and missing keys fail
with a TemplateError instead of doing something surprising. A missing value may be caught with
``| default`` or ``is defined`` however deep the missing parent; any other use of it fails.
"""

from __future__ import annotations

import ast as pyast
import base64
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext.parser import parse as jsonpath_parse

from engine import envrefs, jinjaenv
from engine.errors import EngineError, FlowError, TemplateError
from engine.jinjaenv import ENV, MAX_OUTPUT, RENDER_DEADLINE_S, DeadlineExceeded
from engine.placeholder import Placeholder


@dataclass(frozen=True)
class Where:
    """Where a value came from, for error messages."""

    file: str = ""
    line: int | None = None
    path: str = ""


class RenderContext:
    """Variables for one render plus the environment; remembers every env value it handed out."""

    def __init__(self, variables: Mapping[str, Any], env: Mapping[str, str] | None = None,
                 deadline_s: float = RENDER_DEADLINE_S) -> None:
        self.variables = dict(variables)
        self.env: Mapping[str, str] = env or {}
        self.secrets: dict[str, str] = {}
        self.deadline_s = deadline_s  # CPU seconds each template render may take

    def env_value(self, ref: envrefs.EnvRef, where: Where) -> str:
        value = ref.resolve(self.env, f"{where.path}" if where.path else "")
        if ref.is_secret_in(self.env):
            self.secrets[ref.name] = value
        return value


def _jsonpath_filter(value: Any, path: str) -> Any:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return jsonpath_value(compile_jsonpath(path), value)


def _jsonpath_all(value: Any, path: str) -> list[Any]:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return [m.value for m in compile_jsonpath(path).find(value)]


def _b64encode(value: Any) -> str:
    data = value if isinstance(value, bytes) else str(value).encode()
    return base64.b64encode(data).decode()


def _b64decode(value: str) -> str:
    return base64.b64decode(value).decode("utf-8", "replace")


def _fromjson(value: str) -> Any:
    return json.loads(value)


def _add_filters() -> None:
    ENV.filters.update(
        jsonpath=_jsonpath_filter,
        jsonpath_all=_jsonpath_all,
        b64encode=_b64encode,
        b64decode=_b64decode,
        fromjson=_fromjson,
    )


_add_filters()


@lru_cache(maxsize=1024)
def compile_jsonpath(path: str) -> Any:
    """Parse a JSONPath once; raises ValueError with jsonpath-ng's reason."""
    try:
        return jsonpath_parse(path)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:  # jsonpath-ng raises bare Exceptions too
        raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def jsonpath_value(compiled: Any, data: Any) -> Any:
    matches = compiled.find(data)
    if not matches:
        return None
    if len(matches) == 1:
        return matches[0].value
    return [m.value for m in matches]


# --- compiled values -------------------------------------------------------------------------


class Expr:
    """A compiled flow value. ``render`` may raise TemplateError or MissingEnvError."""

    where: Where = Where()

    def render(self, ctx: RenderContext) -> Any:
        raise NotImplementedError

    def step_refs(self) -> Iterator[tuple[str, Where]]:
        """Ids of steps this value reads through ``steps.<id>``."""
        return iter(())



@dataclass(frozen=True)
class Literal(Expr):
    value: Any
    where: Where = Where()

    def render(self, ctx: RenderContext) -> Any:
        return self.value



@dataclass(frozen=True)
class EnvText(Expr):
    """Literal text with ``${VAR}`` references and no Jinja."""

    parts: tuple[str | envrefs.EnvRef, ...]
    where: Where = Where()

    def render(self, ctx: RenderContext) -> str:
        return "".join(p if isinstance(p, str) else ctx.env_value(p, self.where) for p in self.parts)


@dataclass(frozen=True)
class JsonPath(Expr):
    path: str
    compiled: Any = field(compare=False)
    where: Where = Where()

    def render(self, ctx: RenderContext) -> Any:
        try:
            return jsonpath_value(self.compiled, ctx.variables.get("event"))
        except Exception as exc:  # noqa: BLE001 - jsonpath-ng raises anything on odd data
            raise _render_error(self.where, f"JSONPath {self.path} failed: {exc}") from None


@dataclass(frozen=True)
class Jinja(Expr):
    """A Jinja2 template (string result), single expression (native result) or block template
    (``{% %}``: a list or mapping when its text is one, else a string)."""

    source: str
    native: bool
    env_refs: tuple[envrefs.EnvRef, ...]
    refs: tuple[str, ...]
    fn: Callable[..., Any] = field(compare=False)
    where: Where = Where()
    blocks: bool = False

    def render(self, ctx: RenderContext) -> Any:
        variables = ctx.variables
        if self.env_refs:
            variables = {**variables, "_env": [ctx.env_value(r, self.where) for r in self.env_refs]}
        budget = jinjaenv.start(ctx.deadline_s)
        try:
            result = self.fn(variables)
            if self.native:
                _reject_undefined(result)
        except (EngineError, TemplateError):
            raise
        except DeadlineExceeded as exc:
            raise _render_error(self.where, str(exc)) from None
        except SecurityError as exc:
            raise _render_error(self.where, f"not allowed in the template sandbox: {exc}") from None
        except RecursionError:
            raise _render_error(self.where, "template recursion too deep") from None
        except JinjaTemplateError as exc:
            raise _render_error(self.where, f"{exc.message or type(exc).__name__}") from None
        except Exception as exc:  # noqa: BLE001 - event data can make any operator fail (1/0, "a" + 1)
            raise _render_error(self.where, f"{type(exc).__name__}: {exc}") from None
        finally:
            jinjaenv.stop(budget)
        if isinstance(result, str):
            if len(result) > MAX_OUTPUT:
                raise _render_error(self.where, f"template output exceeds {MAX_OUTPUT} characters")
            if self.blocks:
                return structured(result)
        return result

    def step_refs(self) -> Iterator[tuple[str, Where]]:
        return ((r, self.where) for r in self.refs)


def _reject_undefined(value: Any) -> None:
    """A native result may hold a missing value (``[event.nope]``); it fails here, not when stored."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Undefined):
            item._fail_with_undefined_error()
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())


def structured(text: str) -> Any:
    """The list or mapping a block template's text spells (JSON, else a Python literal), or the text.

    Only text that starts with ``[`` or ``{`` and parses whole counts: ``[x]`` or ``{oops`` stay text.
    A Python literal is accepted because ``{{ item }}`` of a dict renders its repr.
    """
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{" or stripped[-1] not in "]}":
        return text
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        try:
            value = pyast.literal_eval(stripped)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return text
    return value if isinstance(value, list | dict) else text


@dataclass(frozen=True)
class Mapping_(Expr):
    items: tuple[tuple[str, Expr], ...]
    where: Where = Where()

    def render(self, ctx: RenderContext) -> dict[str, Any]:
        return {k: v.render(ctx) for k, v in self.items}

    def step_refs(self) -> Iterator[tuple[str, Where]]:
        for _, v in self.items:
            yield from v.step_refs()



@dataclass(frozen=True)
class List_(Expr):
    items: tuple[Expr, ...]
    where: Where = Where()

    def render(self, ctx: RenderContext) -> list[Any]:
        return [v.render(ctx) for v in self.items]

    def step_refs(self) -> Iterator[tuple[str, Where]]:
        for v in self.items:
            yield from v.step_refs()



def _render_error(where: Where, message: str) -> TemplateError:
    return TemplateError(message, file=where.file, line=where.line, path=where.path)


_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


def _step_refs_of(ast: nodes.Node) -> tuple[str, ...]:
    found: list[str] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == "steps":
            found.append(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) and node.node.name == "steps":
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                found.append(node.arg.value)
    return tuple(dict.fromkeys(found))


def _substitute_env(parts: list[str | envrefs.EnvRef], native: bool, where: Where) -> str:
    """Replace ``${VAR}`` by ``_env[i]``: bare inside expressions, wrapped in ``{{ }}`` in plain text.

    A reference inside a quoted string of an expression cannot work (it would be the text
    ``_env[0]``), so it is a load-time error that says how to write it.
    """
    out: list[str] = []
    inside = native  # a bare expression is all "inside"
    index = 0
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            if not native:
                opened = max(part.rfind("{{"), part.rfind("{%"))
                closed = max(part.rfind("}}"), part.rfind("%}"))
                if opened != closed:
                    inside = opened > closed
            continue
        out.append(f"_env[{index}]" if inside else f"{{{{ _env[{index}] }}}}")
        index += 1
    text = "".join(out)
    try:
        for _, kind, value in ENV.lex("{{ " + text + " }}" if native else text):
            if kind == "string" and "_env[" in value:
                raise TemplateError(
                    "${VAR} inside a quoted string is not expanded; write it unquoted "
                    '(event.team == ${TEAM}) or outside the braces ("Bearer ${TOKEN}")',
                    file=where.file, line=where.line, path=where.path)
    except TemplateSyntaxError:
        pass  # reported with its line by the parse that follows
    return text


def compile_expression(source: str, where: Where) -> Jinja:
    """A bare expression (``filter:``, ``when:``), with or without surrounding ``{{ }}``."""
    match = _SINGLE.match(source)
    inner = match.group("expr") if match and "{{" not in match.group("expr") else source
    return _compile_jinja(inner, where, native=True)


def _compile_jinja(source: str, where: Where, *, native: bool) -> Jinja:
    parts = envrefs.split(source)
    refs = tuple(p for p in parts if isinstance(p, envrefs.EnvRef))
    if refs:
        source = _substitute_env(parts, native, where)
    text = "{{ " + source + " }}" if native else source
    budget = jinjaenv.start()  # Jinja runs filters on constants while compiling: bounded like a render
    try:
        ast = ENV.parse(text)
        if native:
            fn_expr = ENV.compile_expression(source, undefined_to_none=False)

            def fn(variables: Mapping[str, Any]) -> Any:
                return fn_expr(**variables)

        else:
            template = ENV.from_string(ast)

            def fn(variables: Mapping[str, Any]) -> Any:
                return template.render(variables)

    except TemplateSyntaxError as exc:
        line = where.line + exc.lineno - 1 if where.line is not None and exc.lineno else where.line
        raise TemplateError(
            f"Jinja syntax error: {exc.message}", file=where.file, line=line, path=where.path
        ) from None
    except (JinjaTemplateError, SyntaxError, RecursionError, MemoryError) as exc:
        # Jinja folds constant sub-expressions while compiling, so `{{ 'a'.b and 1 }}` fails here
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise TemplateError(f"template does not compile: {message}", file=where.file, line=where.line,
                            path=where.path) from None
    finally:
        violation = jinjaenv.compile_violation()
        jinjaenv.stop(budget)
    if violation is not None:
        raise TemplateError(f"template does not compile: {violation}", file=where.file, line=where.line,
                            path=where.path)
    return Jinja(source=source, native=native, env_refs=refs, refs=_step_refs_of(ast), fn=fn, where=where,
                 blocks=not native and "{%" in text)


def compile_value(raw: Any, where: Where, lines: Mapping[str, int] | None = None,
                  errors: list[FlowError] | None = None) -> Expr:
    """Compile any YAML value (nested mappings and lists included) into an Expr.

    ``lines`` maps key paths to line numbers so nested errors point at their own line. With
    ``errors``, every bad item is collected there (and compiles to null) instead of raising at the
    first, so a flow reports all its problems at once.
    """
    if isinstance(raw, Mapping):
        items = []
        for k, v in raw.items():
            sub = _child(where, str(k), lines)
            items.append((str(k), compile_value(v, sub, lines, errors)))
        return Mapping_(tuple(items), where)
    if isinstance(raw, list):
        return List_(tuple(compile_value(v, _child(where, f"[{i}]", lines), lines, errors)
                           for i, v in enumerate(raw)), where)
    if not isinstance(raw, str):
        return Literal(raw, where)
    if errors is None:
        return compile_string(raw, where)
    try:
        return compile_string(raw, where)
    except TemplateError as exc:
        errors.append(exc)
        return Literal(None, where)


def compile_string(raw: str, where: Where) -> Expr:
    if raw.startswith("$$"):
        return _compile_text(raw[1:], where)
    if raw.startswith("$") and not raw.startswith("${"):
        try:
            return JsonPath(raw, compile_jsonpath(raw), where)
        except ValueError as exc:
            raise TemplateError(f"invalid JSONPath {raw!r}: {exc}", file=where.file, line=where.line,
                                path=where.path) from None
    return _compile_text(raw, where)


def _compile_text(raw: str, where: Where) -> Expr:
    """A string that is not a JSONPath: literal, ${VAR} text, one native expression, or a template."""
    if "{{" in raw or "{%" in raw:
        match = _SINGLE.match(raw)
        if match and "{{" not in match.group("expr") and "}}" not in match.group("expr"):
            return _compile_jinja(match.group("expr"), where, native=True)
        return _compile_jinja(raw, where, native=False)
    parts = envrefs.split(raw)
    if any(isinstance(p, envrefs.EnvRef) for p in parts):
        return EnvText(tuple(parts), where)
    return Literal("".join(p for p in parts if isinstance(p, str)), where)


def _child(where: Where, key: str, lines: Mapping[str, int] | None) -> Where:
    path = f"{where.path}{key}" if key.startswith("[") else (f"{where.path}.{key}" if where.path else key)
    line = lines.get(path, where.line) if lines else where.line
    return Where(where.file, line, path)


# --- keys: dedupe, order_by, index ----------------------------------------------------------


@dataclass(frozen=True)
class KeyExpr:
    """``$.json.path`` into the body or ``header:X-Name``; extracts a string key or None.

    ``lower`` (index fields that declare it): the value is trimmed and case-folded, so a search finds it
    whatever case was typed. ``missing`` is what extract returns when nothing resolves: index fields use
    ``""``, which the store keeps as a marker row, so the flow page can count runs whose field was empty
    (a typo in the path) without scanning runs.
    """

    source: str
    header: str | None = None
    compiled: Any = field(default=None, compare=False)
    lower: bool = False
    missing: str | None = None

    def extract(self, body: Any, headers: Mapping[str, str]) -> str | None:
        if self.header is not None:
            value = headers.get(self.header.lower())
            return self.normalise(value) if value else self.missing
        try:
            found = jsonpath_value(self.compiled, body)
        except Exception:  # noqa: BLE001 - odd bodies simply have no key
            return self.missing
        if found is None or found == "" or found == []:
            return self.missing
        text = found if isinstance(found, str) else json.dumps(found, sort_keys=True, default=str)
        return self.normalise(text)

    def normalise(self, text: str) -> str | None:
        """The stored form of a value (searches apply it to the value typed); cut at 500 characters."""
        if self.lower:
            return fold(text) or self.missing
        return clean_text(text)[:500]


def fold(text: str) -> str:
    """The form of a ``lower: true`` index value: trimmed and case-folded (``ß`` is ``ss``), at most 500 characters."""
    return clean_text(text).strip().casefold()[:500]


def clean_text(text: str) -> str:
    """Text any database can store: no NUL, no lone surrogates (event data may hold both)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def compile_key(source: str, *, lower: bool = False, missing: str | None = None) -> KeyExpr:
    """Raises ValueError naming the problem."""
    text = source.strip()
    if text.lower().startswith("header:"):
        name = text[len("header:") :].strip()
        if not name:
            raise ValueError("header: needs a header name, e.g. header:X-GitHub-Delivery")
        return KeyExpr(source, header=name, lower=lower, missing=missing)
    if not text.startswith("$"):
        raise ValueError("expected a JSONPath starting with $ or header:<Name>")
    return KeyExpr(source, compiled=compile_jsonpath(text), lower=lower, missing=missing)


def _env_refs(expr: Expr) -> Iterator[envrefs.EnvRef]:
    if isinstance(expr, EnvText):
        yield from (p for p in expr.parts if isinstance(p, envrefs.EnvRef))
    elif isinstance(expr, Jinja):
        yield from expr.env_refs
    elif isinstance(expr, Mapping_):
        for _, v in expr.items:
            yield from _env_refs(v)
    elif isinstance(expr, List_):
        for v in expr.items:
            yield from _env_refs(v)


def env_refs(expr: Expr) -> list[envrefs.EnvRef]:
    return list(_env_refs(expr))


__all__ = [
    "Expr",
    "KeyExpr",
    "Placeholder",
    "RenderContext",
    "Where",
    "compile_expression",
    "compile_key",
    "compile_value",
    "compile_string",
    "env_refs",
]
