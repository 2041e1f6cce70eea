"""The engine's Jinja2 environment: an immutable sandbox in which every allocation and every loop is bounded.

Flow templates come from flow files but render event data from the internet, and the web process
compiles them whenever a flow file changes, so neither compiling nor rendering may allocate gigabytes
or spin. Three mechanisms, each checked *before* the work it guards:

- per-operation caps: one string at most MAX_OUTPUT characters, one repetition or list at most
  MAX_REPEAT items, an integer at most MAX_INT_BITS bits, widths at most MAX_REPEAT;
- a per-render budget (a ContextVar, so it works in any thread): the characters and items all
  operations of one render produce together (MAX_WORK, garbage included) and the range() items;
- a CPU deadline per render, checked at each ``for`` iteration (the parser wraps every loop's
  iterable in an internal filter node that the code generator turns into a call) and at each call
  (macros, methods, globals). It reads the cheap monotonic clock, and the thread's CPU clock only
  once the monotonic time is up, so a render slowed by other threads holding the GIL is not cut short.

Jinja folds constant sub-expressions (filters included) while compiling: compiling runs under a
budget too, and a fold that breaks a cap is reported by :func:`compile_violation` at load time.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar, Token
from io import StringIO
from itertools import chain, islice
from pprint import PrettyPrinter
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter, safe_range
from jinja2.utils import generate_lorem_ipsum, pass_environment

from engine.placeholder import Placeholder

MAX_OUTPUT = 1_000_000  # characters one string (and one template's output) may have
MAX_REPEAT = 100_000  # items one list or repetition may have; largest width/padding/precision
MAX_RANGE_TOTAL = 200_000  # range() items one render may produce, nested loops included
MAX_INT_BITS = 14_000  # about 4,200 digits: every integer a template makes can be printed and stored (JSON)
MAX_WORK = 20_000_000  # characters + items all bounded operations of one render may produce together
RENDER_DEADLINE_S = 1.0  # CPU seconds one render (or one compile) may take


class DeadlineExceeded(Exception):
    """A render that used up its CPU time; not a SecurityError so the message can say so plainly."""


LAZY_CPU_S = 0.01


class Budget:
    """What one render may still spend; lives in a ContextVar for the duration of the render."""

    __slots__ = ("work", "ranges", "limit_s", "wall_start", "cpu_end", "wall_check", "violation")

    def __init__(self, limit_s: float = RENDER_DEADLINE_S) -> None:
        self.work = MAX_WORK
        self.ranges = MAX_RANGE_TOTAL
        self.limit_s = limit_s
        # The thread's CPU clock costs a system call on some machines (4 us against 0.3 us), and almost
        # every render ends within milliseconds: it is read only once a render has run for LAZY_CPU_S,
        # counting that time as CPU (so a deadline can only come that much early, never late).
        self.wall_start = time.monotonic()
        self.cpu_end: float | None = None
        self.wall_check = self.wall_start + min(limit_s, LAZY_CPU_S)  # CPU time never runs ahead of wall time
        self.violation: str | None = None

    def tick(self) -> None:
        if time.monotonic() > self.wall_check:
            self.check_cpu()

    def check_cpu(self) -> None:
        if self.cpu_end is None:
            self.cpu_end = time.thread_time() - (time.monotonic() - self.wall_start) + self.limit_s
        left = self.cpu_end - time.thread_time()
        if left <= 0:
            raise DeadlineExceeded(f"template took longer than {self.limit_s:g}s (render deadline)")
        self.wall_check = time.monotonic() + left

    def iterate(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """The items of ``iterable``, checking the clock every 32 items: a generator step per item
        would double the cost of a short loop body, chain over 32-item slices adds ~10%."""
        items = iter(iterable)

        def slices() -> Iterator[list[Any]]:
            while chunk := list(islice(items, 32)):
                self.tick()
                yield chunk

        return chain.from_iterable(slices())


_BUDGET: ContextVar[Budget | None] = ContextVar("hookline_template_budget", default=None)


def start(limit_s: float = RENDER_DEADLINE_S) -> Token[Budget | None]:
    """Open a budget for one render or compile; pass the token to :func:`stop`."""
    return _BUDGET.set(Budget(limit_s))


def stop(token: Token[Budget | None]) -> None:
    _BUDGET.reset(token)


def compile_violation() -> str | None:
    """The first cap a constant fold broke in the current compile (Jinja turns it into 'fold later')."""
    budget = _BUDGET.get()
    return budget.violation if budget is not None else None


def _fail(message: str) -> None:
    budget = _BUDGET.get()
    if budget is not None and budget.violation is None:
        budget.violation = message
    raise SecurityError(message)


def charge(amount: int, what: str) -> None:
    """Count ``amount`` characters/items against the render's budget (no budget: no limit)."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.work -= amount
        if budget.work < 0:
            _fail(f"{what}: one render may produce at most {MAX_WORK} characters and items in all")


def _cap(size: int, limit: int, what: str) -> None:
    if size > limit:
        _fail(f"{what} would produce more than {limit} {'characters' if limit == MAX_OUTPUT else 'items'}")
    charge(size, what)


def weigh(value: Any, limit: int = MAX_OUTPUT, what: str = "value", shown: int = MAX_OUTPUT) -> int:
    """About how many characters ``str(value)``/JSON of value has, walking at most ``limit`` of them.

    Repeated references make small data serialise huge (``[s] * 100000`` with a 100 kB ``s``), so
    containers are weighed before str(), tojson or join turn them into text.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend(item)
        else:
            total += 8
        if total > limit:
            _fail(f"{what} would produce more than {shown} characters")
    return total


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_width(name: str, args: Iterable[Any]) -> None:
    if any(_is_int(a) and a > MAX_REPEAT for a in args):
        _fail(f"{name} wider than {MAX_REPEAT} is not allowed")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?[a-zA-Z%]")
_FORMAT_NUMBER = re.compile(r"\d+")


def _check_percent(fmt: str, args: Any, what: str = "% formatting") -> None:
    """Bound ``fmt % args`` before running it: widths and precisions (``*`` ones from args) add up."""
    values = args if isinstance(args, tuple) else (args,)
    size = len(fmt)
    stars = 0
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for number in (width, precision):
            if number == "*":
                stars += 1
            elif number:
                if len(number) > 6 or int(number) > MAX_REPEAT:
                    _fail(f"{what}: widths above {MAX_REPEAT} are not allowed")
                size += int(number)
    if stars:
        widths = [abs(v) for v in values if _is_int(v)]
        if any(w > MAX_REPEAT for w in widths):
            _fail(f"{what}: widths above {MAX_REPEAT} are not allowed")
        size += sum(widths)
    for v in values:
        size += weigh(v, MAX_OUTPUT, what) if not _is_int(v) else 0
    _cap(size, MAX_OUTPUT, what)


class _Formatter(SandboxedFormatter):
    """``str.format`` with each field's width and precision (nested ``{}`` ones too) bounded."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in _FORMAT_NUMBER.findall(format_spec):
            if len(number) > 6 or int(number) > MAX_REPEAT:
                _fail(f"format widths above {MAX_REPEAT} are not allowed")
        text = super().format_field(value, format_spec)
        charge(len(text), "str.format")
        return text


_LOOP_FILTER = "hookline:loop"  # not a name a template can write: only _Env._parse puts it in


class _CodeGenerator(CodeGenerator):
    def visit_Filter(self, node: nodes.Filter, frame: Frame) -> None:
        if node.name != _LOOP_FILTER:
            return super().visit_Filter(node, frame)
        self.write("environment.bounded_iter(")
        assert node.node is not None  # _Env._parse always wraps an iterable
        self.visit(node.node, frame)
        self.write(")")
        return None

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class HooklineUndefined(ChainableUndefined, StrictUndefined):
    """A missing value: attribute and item access chain (so ``event.a.b | default('')`` and
    ``is defined`` work on a missing parent), every other use fails like StrictUndefined."""

    __slots__ = ()


def _str_of(value: Any, what: str) -> str:
    """str() of anything, containers weighed first (their repr can dwarf their memory)."""
    if isinstance(value, list | tuple | Mapping | set | frozenset):
        weigh(value, MAX_OUTPUT, what)
    return str(value)


def _finalize(value: Any) -> str:
    """Every ``{{ }}`` of a text template passes here: its text counts against the render's budget."""
    text = value if type(value) is str else _str_of(value, "output")
    _cap(len(text), MAX_OUTPUT, "output")
    return text


class _Env(ImmutableSandboxedEnvironment):
    """Sandbox with dict keys before dict methods (``event.items`` is the key) and bounded work."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in list(tree.find_all(nodes.For)):  # each iteration checks the deadline
            loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.iter.lineno)
            loop.iter.set_environment(self)
        return tree

    def bounded_iter(self, iterable: Iterable[Any]) -> Iterable[Any]:
        """A ``for`` loop's iterable; unregistered as a filter, so Jinja cannot fold it or list it."""
        budget = _BUDGET.get()
        return iterable if budget is None else budget.iterate(iterable)

    def bounded_concat(self, parts: tuple[Any, ...]) -> str:
        """The ``~`` operator: refused before it builds a string above MAX_OUTPUT."""
        texts = [p if type(p) is str else _str_of(p, "~") for p in parts]
        _cap(sum(map(len, texts)), MAX_OUTPUT, "~ (concatenation)")
        return "".join(texts)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+" and type(left) in _NUMBERS and type(right) in _NUMBERS:
            return left + right  # the common case, kept cheap: adding numbers cannot grow much
        if operator == "*":
            if _is_int(left) and _is_int(right):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    _fail(f"integers larger than {MAX_INT_BITS} bits are not allowed")
            else:
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, str | list | tuple) and _is_int(n) and n > 0:
                        _cap(len(seq) * n, MAX_REPEAT, "repetition")
                        if isinstance(seq, list | tuple) and seq:
                            _cap(weigh(seq, MAX_OUTPUT // n + 1, "repetition") * n, MAX_OUTPUT, "repetition")
        elif operator == "+":
            if isinstance(left, str) and isinstance(right, str):
                _cap(len(left) + len(right), MAX_OUTPUT, "+ (concatenation)")
            elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
                _cap(len(left) + len(right), MAX_REPEAT, "+ (list concatenation)")
        elif operator == "**" and _is_int(left) and _is_int(right):
            if right > 0 and max(1, left.bit_length()) * right > MAX_INT_BITS:
                _fail(f"integers larger than {MAX_INT_BITS} bits are not allowed")
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if super().wrap_str_format(value) is None:
            return None  # not str.format / str.format_map
        owner, vformat = value.__self__, _Formatter(self).vformat
        if value.__name__ == "format_map":
            return lambda mapping: str(vformat(owner, (), mapping))
        return lambda *args, **kwargs: str(vformat(owner, args, kwargs))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = _BUDGET.get()
        if budget is not None:
            budget.tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and args and getattr(__obj, "__name__", "") == "join":
            args = (list(args[0]), *args[1:])  # a generator (``x | map('string')``) is weighed as a list
        if isinstance(owner, str | int) and not isinstance(owner, bool):
            _check_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


_PADDING = frozenset({"ljust", "rjust", "center", "zfill"})
_NUMBERS = frozenset({int, float})


def _check_method(owner: str | int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Methods of str and int that can build something much bigger than their arguments."""
    if isinstance(owner, int):
        _check_width(f"int.{name}", (*args, *kwargs.values()))
    elif name in _PADDING:
        _check_width(f"str.{name}", (*args, *kwargs.values()))
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if _is_int(size):
            _cap(len(owner) + owner.count("\t") * max(0, size), MAX_OUTPUT, "str.expandtabs")
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, *args[:3])
    elif name == "join" and args:
        items = args[0]
        if isinstance(items, list | tuple):
            sizes = sum(weigh(i, MAX_OUTPUT, "str.join") for i in items)
            _cap(sizes + len(owner) * len(items), MAX_OUTPUT, "str.join")
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        _cap(len(owner) * max(1, longest), MAX_OUTPUT, "str.translate")


def _check_replace(text: str, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        hits = text.count(old) if old else len(text) + 1
        if _is_int(count) and count >= 0:
            hits = min(hits, count)
        _cap(len(text) + hits * (len(new) - len(old)), MAX_OUTPUT, "replace")


# --- filters and globals that can allocate ------------------------------------------------------


def _wrap(name: str, fn: Callable[..., Any], check: Callable[..., None]) -> Callable[..., Any]:
    """``fn`` with ``check(value, *args, **kwargs)`` first; keeps Jinja's context-passing marker."""
    marker = getattr(fn, "jinja_pass_arg", None)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check(*(args[1:] if marker is not None else args), **kwargs)
        return fn(*args, **kwargs)

    if marker is not None:
        wrapper.jinja_pass_arg = marker  # type: ignore[attr-defined]
    wrapper.__name__ = wrapper.__qualname__ = f"bounded_{name}"
    return wrapper


def _text(value: Any) -> str:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return value if isinstance(value, str) else str(value)


def _check_center(value: Any, width: Any = 80, *_: Any, **kw: Any) -> None:
    _check_width("the center filter", (width, *kw.values()))


def _check_truncate(value: Any, length: Any = 255, *args: Any, **kw: Any) -> None:
    _check_width("the truncate filter", (length, *kw.values()))


def _check_indent(value: Any, width: Any = 4, *_: Any, **kw: Any) -> None:
    width = kw.get("width", width)
    step = len(width) if isinstance(width, str) else width if _is_int(width) else 0
    _check_width("the indent filter", (step,))
    text = _text(value)
    _cap(len(text) + (text.count("\n") + 1) * step, MAX_OUTPUT, "the indent filter")


def _check_wordwrap(value: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
                    *_: Any, **kw: Any) -> None:
    width, wrapstring = kw.get("width", width), kw.get("wrapstring", wrapstring)
    _check_width("the wordwrap filter", (width,))
    text = _text(value)
    if isinstance(wrapstring, str) and _is_int(width):
        lines = min(len(text) + 1, 2 * len(text) // max(1, width) + text.count("\n") + 2)
        _cap(len(text) + lines * len(wrapstring), MAX_OUTPUT, "the wordwrap filter")


def _check_count(what: str) -> Callable[..., None]:
    def check(value: Any, count: Any = 0, fill_with: Any = None, *_: Any, **kw: Any) -> None:
        count = kw.get("linecount", kw.get("slices", count))
        if _is_int(count):
            _cap(count, MAX_REPEAT, what)
            fill = kw.get("fill_with", fill_with)
            if fill is not None:
                charge(weigh(fill, MAX_OUTPUT // max(1, count) + 1, what) * count, what)

    return check


def _check_urlize(value: Any, *args: Any, **kw: Any) -> None:
    if any(isinstance(a, str | list | tuple) and len(a) > 200 for a in (*args, *kw.values())):
        _fail("the urlize filter takes options of at most 200 characters")
    charge(len(_text(value)) * 3, "the urlize filter")


def _format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    text = _text(value)
    values: Any = kwargs or args
    _check_percent(text, values, "the format filter")
    return str(text % values)


def _replace_filter(value: Any, old: str, new: str, count: int | None = None) -> str:
    text = _text(value)
    _check_replace(text, old, new, -1 if count is None else count)
    return text.replace(old, new, -1 if count is None else count)


def _join_filter(value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    """Jinja's join, with the size of the result known before it is built."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    items = list(value)
    if attribute is not None:
        items = list(map(make_attrgetter(ENV, attribute), items))
    texts = []
    size = len(d) * max(0, len(items) - 1)
    for item in items:
        text = item if type(item) is str else _str_of(item, "join")
        size += len(text)
        if size > MAX_OUTPUT:
            _fail(f"join would produce more than {MAX_OUTPUT} characters")
        texts.append(text)
    charge(size, "join")
    return _text(d).join(texts)


def _json_default(value: Any) -> Any:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, Placeholder):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _tojson_filter(value: Any, indent: int | str | None = None) -> str:
    """Jinja's tojson (sorted keys, ``<>&'`` escaped) with the indent and the output bounded."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if indent is not None and (len(indent) if isinstance(indent, str) else indent if _is_int(indent) else 17) > 16:
        _fail("tojson indent above 16 is not allowed")
    if indent is None:
        weigh(value, MAX_OUTPUT, "tojson")
        text = json.dumps(value, sort_keys=True, default=_json_default)
    else:
        chunks, size = [], 0
        for chunk in json.JSONEncoder(sort_keys=True, indent=indent, default=_json_default).iterencode(value):
            size += len(chunk)
            if size > MAX_OUTPUT:
                _fail(f"tojson would produce more than {MAX_OUTPUT} characters")
            chunks.append(chunk)
        text = "".join(chunks)
    charge(len(text), "tojson")
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027")


class _CappedStream(StringIO):
    def write(self, s: str) -> int:
        if self.tell() + len(s) > MAX_OUTPUT:
            _fail(f"pprint would produce more than {MAX_OUTPUT} characters")
        return super().write(s)


def _pprint_filter(value: Any) -> str:
    stream = _CappedStream()
    PrettyPrinter(stream=stream).pprint(value)
    charge(stream.tell(), "pprint")
    return stream.getvalue().rstrip("\n")


@pass_environment
def _sum_filter(environment: Any, iterable: Iterable[Any], attribute: str | int | None = None,
                start: Any = 0) -> Any:
    """Jinja's sum; adding lists (``sum(start=[])``) is done in place, not quadratically."""
    items = list(iterable)
    if attribute is not None:
        items = list(map(make_attrgetter(environment, attribute), items))
    if not isinstance(start, list | tuple):
        return sum(items, start)
    out = list(start)
    for item in items:
        if not isinstance(item, type(start)):
            raise TypeError(f'can only concatenate {type(start).__name__} (not "{type(item).__name__}")')
        out.extend(item)
        if len(out) > MAX_REPEAT:
            _fail(f"sum would produce more than {MAX_REPEAT} items")
    charge(len(out), "sum")
    return out if isinstance(start, list) else tuple(out)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
    if not all(_is_int(v) for v in (n, min, max)) or n > 100 or max > 1000 or min > max:
        _fail("lipsum takes at most 100 paragraphs of at most 1000 words")
    charge(n * max * 8, "lipsum")
    return generate_lorem_ipsum(n, html, min, max)


def _budget_range(*args: int) -> range:
    """``range`` for templates: each call is bounded by the sandbox, and all calls of one render together."""
    rng = safe_range(*args)
    budget = _BUDGET.get()
    if budget is not None:
        budget.ranges -= len(rng)
        if budget.ranges < 0:
            _fail(f"loops over more than {MAX_RANGE_TOTAL} range items in one template")
    return rng


def make_env() -> _Env:
    """The one environment every flow template compiles in."""
    env = _Env(undefined=HooklineUndefined, autoescape=False, keep_trailing_newline=True, finalize=_finalize)
    env.globals["range"] = _budget_range
    env.globals["lipsum"] = _lipsum
    checks: dict[str, Callable[..., None]] = {
        "center": _check_center, "truncate": _check_truncate, "indent": _check_indent,
        "wordwrap": _check_wordwrap, "batch": _check_count("the batch filter"),
        "slice": _check_count("the slice filter"), "urlize": _check_urlize,
    }
    for name, check in checks.items():
        env.filters[name] = _wrap(name, env.filters[name], check)
    env.filters.update(format=_format_filter, replace=_replace_filter, join=_join_filter, tojson=_tojson_filter,
                       pprint=_pprint_filter, sum=_sum_filter)
    return env


ENV = make_env()
