"""Flow values compiled once at load and rendered per run.

A value in a flow file is one of:
- a literal (number, bool, null, or a string with nothing special in it);
- ``$.json.path`` over the event body (jsonpath-ng, filters included): one match gives the
  value, several a list, none null; ``$$`` escapes a literal dollar;
- ``"{{ expression }}"`` alone: the expression's native value (number, list, dict...);
- text mixing ``{{ }}``/``{% %}`` and literals: a string;
- ``${NAME}`` / ``${NAME:-default}`` anywhere in a string: an environment variable read at
  render time. Its value is a secret: the RenderContext collects it so callers can redact it.

Jinja2 runs in an immutable sandbox with StrictUndefined: templates come from flow files but
render untrusted event data, so attribute escapes, unbounded repetition and missing keys fail
with a TemplateError instead of doing something surprising.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext.parser import parse as jsonpath_parse

from engine import envrefs
from engine.errors import EngineError, FlowError, TemplateError

MAX_OUTPUT = 1_000_000  # characters one template may produce
MAX_REPEAT = 100_000  # longest string/list a `*` may build


@dataclass(frozen=True)
class Where:
    """Where a value came from, for error messages."""

    file: str = ""
    line: int | None = None
    path: str = ""


class RenderContext:
    """Variables for one render plus the environment; remembers every env value it handed out."""

    def __init__(self, variables: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
        self.variables = dict(variables)
        self.env: Mapping[str, str] = env or {}
        self.secrets: dict[str, str] = {}

    def env_value(self, ref: envrefs.EnvRef, where: Where) -> str:
        value = ref.resolve(self.env, f"{where.path}" if where.path else "")
        if ref.is_secret_in(self.env):
            self.secrets[ref.name] = value
        return value


_RANGE_BUDGET: ContextVar[list[int]] = ContextVar("hookline_range_budget")
MAX_RANGE_TOTAL = 200_000  # range() items one render may produce, nested loops included
MAX_INT_BITS = 100_000
_BIG_NUMBER = re.compile(r"\d{7,}|[1-9]\d{5}")  # a width/precision above 99,999 in a format spec


def _budget_range(*args: int) -> range:
    """``range`` for templates: each call is bounded by the sandbox, and all calls of one render together."""
    rng = safe_range(*args)
    budget = _RANGE_BUDGET.get(None)
    if budget is not None:
        budget[0] -= len(rng)
        if budget[0] < 0:
            raise SecurityError(f"loops over more than {MAX_RANGE_TOTAL} range items in one template")
    return rng


def _check_width(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if any(isinstance(a, int) and not isinstance(a, bool) and a > MAX_REPEAT for a in (*args, *kwargs.values())):
        raise SecurityError(f"{name} wider than {MAX_REPEAT} is not allowed")


def _check_format(spec: str) -> None:
    if _BIG_NUMBER.search(spec):
        raise SecurityError(f"format widths above {MAX_REPEAT} are not allowed")


def _check_replace(text: str, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        hits = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        if len(text) + hits * (len(new) - len(old)) > MAX_OUTPUT:
            raise SecurityError(f"replace producing more than {MAX_OUTPUT} characters is not allowed")


class _Env(ImmutableSandboxedEnvironment):
    """Sandbox with dict keys before dict methods (``event.items`` is the key) and bounded output:
    repetition, padding, format widths, replace, big integers and range() are all capped."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_REPEAT:
                    raise SecurityError(f"repetition producing more than {MAX_REPEAT} items is not allowed")
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and max(1, left.bit_length()) * right > MAX_INT_BITS:
                raise SecurityError(f"integers larger than {MAX_INT_BITS} bits are not allowed")
        if operator == "%" and isinstance(left, str):
            _check_format(left)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if isinstance(getattr(value, "__self__", None), str) and getattr(value, "__name__", "") in (
                "format", "format_map"):
            _check_format(value.__self__)
        return super().wrap_str_format(value)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        name = getattr(__obj, "__name__", "")
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            if name in _PADDING:
                _check_width(f"str.{name}", args, kwargs)
            elif name == "replace" and args:
                _check_replace(owner, *args[:3])
        return super().call(__context, __obj, *args, **kwargs)


_PADDING = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})
_WIDE_FILTERS = ("center", "indent", "truncate", "wordwrap", "filesizeformat")


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _check_width(f"the {name} filter", args[1:], kwargs)
        return fn(*args, **kwargs)

    for attr in ("jinja_pass_arg",):  # keep Jinja's context/environment passing markers
        if hasattr(fn, attr):
            setattr(wrapper, attr, getattr(fn, attr))
    return wrapper


def _format_filter(value: str, *args: Any, **kwargs: Any) -> str:
    _check_format(str(value))
    return str(value) % (kwargs or args)


def _replace_filter(value: Any, old: str, new: str, count: int | None = None) -> str:
    text = str(value)
    _check_replace(text, old, new, -1 if count is None else count)
    return text.replace(old, new, -1 if count is None else count)


def _jsonpath_filter(value: Any, path: str) -> Any:
    return jsonpath_value(compile_jsonpath(path), value)


def _jsonpath_all(value: Any, path: str) -> list[Any]:
    return [m.value for m in compile_jsonpath(path).find(value)]


def _b64encode(value: Any) -> str:
    data = value if isinstance(value, bytes) else str(value).encode()
    return base64.b64encode(data).decode()


def _b64decode(value: str) -> str:
    return base64.b64decode(value).decode("utf-8", "replace")


def _fromjson(value: str) -> Any:
    return json.loads(value)


def _make_env() -> _Env:
    env = _Env(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.globals["range"] = _budget_range
    for name in _WIDE_FILTERS:
        env.filters[name] = _bounded_filter(name, env.filters[name])
    env.filters["format"] = _format_filter
    env.filters["replace"] = _replace_filter
    env.filters.update(
        jsonpath=_jsonpath_filter,
        jsonpath_all=_jsonpath_all,
        b64encode=_b64encode,
        b64decode=_b64decode,
        fromjson=_fromjson,
    )
    return env


ENV = _make_env()


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
    """A Jinja2 template (string result) or single expression (native result)."""

    source: str
    native: bool
    env_refs: tuple[envrefs.EnvRef, ...]
    refs: tuple[str, ...]
    fn: Callable[..., Any] = field(compare=False)
    where: Where = Where()

    def render(self, ctx: RenderContext) -> Any:
        variables = ctx.variables
        if self.env_refs:
            variables = {**variables, "_env": [ctx.env_value(r, self.where) for r in self.env_refs]}
        budget = _RANGE_BUDGET.set([MAX_RANGE_TOTAL])
        try:
            result = self.fn(variables)
        except (EngineError, TemplateError):
            raise
        except SecurityError as exc:
            raise _render_error(self.where, f"not allowed in the template sandbox: {exc}") from None
        except RecursionError:
            raise _render_error(self.where, "template recursion too deep") from None
        except JinjaTemplateError as exc:
            raise _render_error(self.where, f"{exc.message or type(exc).__name__}") from None
        except Exception as exc:  # noqa: BLE001 - event data can make any operator fail (1/0, "a" + 1)
            raise _render_error(self.where, f"{type(exc).__name__}: {exc}") from None
        finally:
            _RANGE_BUDGET.reset(budget)
        if isinstance(result, Undefined):
            raise _render_error(self.where, f"{result._undefined_message}")
        if isinstance(result, str) and len(result) > MAX_OUTPUT:
            raise _render_error(self.where, f"template output exceeds {MAX_OUTPUT} characters")
        return result

    def step_refs(self) -> Iterator[tuple[str, Where]]:
        return ((r, self.where) for r in self.refs)


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
    return Jinja(source=source, native=native, env_refs=refs, refs=_step_refs_of(ast), fn=fn, where=where)


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
    """``$.json.path`` into the body or ``header:X-Name``; extracts a string key or None."""

    source: str
    header: str | None = None
    compiled: Any = field(default=None, compare=False)

    def extract(self, body: Any, headers: Mapping[str, str]) -> str | None:
        if self.header is not None:
            value = headers.get(self.header.lower())
            return clean_text(value)[:500] if value else None
        try:
            found = jsonpath_value(self.compiled, body)
        except Exception:  # noqa: BLE001 - odd bodies simply have no key
            return None
        if found is None or found == "" or found == []:
            return None
        text = found if isinstance(found, str) else json.dumps(found, sort_keys=True, default=str)
        return clean_text(text)[:500]


def clean_text(text: str) -> str:
    """Text any database can store: no NUL, no lone surrogates (event data may hold both)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def compile_key(source: str) -> KeyExpr:
    """Raises ValueError naming the problem."""
    text = source.strip()
    if text.lower().startswith("header:"):
        name = text[len("header:") :].strip()
        if not name:
            raise ValueError("header: needs a header name, e.g. header:X-GitHub-Delivery")
        return KeyExpr(source, header=name)
    if not text.startswith("$"):
        raise ValueError("expected a JSONPath starting with $ or header:<Name>")
    return KeyExpr(source, compiled=compile_jsonpath(text))


class Placeholder:
    """Stands in for a response a dry run did not receive; any lookup on it is another placeholder."""

    def __init__(self, label: str) -> None:
        self._label = label

    def __getattr__(self, name: str) -> Placeholder:
        if name.startswith("_"):
            raise AttributeError(name)
        return Placeholder(f"{self._label}.{name}")

    def __getitem__(self, key: Any) -> Placeholder:
        return Placeholder(f"{self._label}[{key!r}]")

    def __str__(self) -> str:
        return f"<{self._label}>"

    __repr__ = __str__

    def __bool__(self) -> bool:
        return True

    def __iter__(self) -> Iterator[Any]:
        return iter(())


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
