"""YAML text -> Flow, collecting every problem with its file, line and key path.

Line numbers come from PyYAML node marks; each value's key path (``steps[2].http.url``) maps to
the line it starts on. Every template and JSONPath is compiled here, so a typo is found when the
file loads, not on the first production event. A flow is never half-loaded: any problem raises
FlowInvalid carrying all of them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from engine import envrefs
from engine.errors import FlowError, FlowInvalid, TemplateError
from engine.model import Flow, Step, Trigger
from engine.steps import REGISTRY, Field, StepType, parse_duration, walk
from engine.steps.http import parse_statuses
from engine.templating import (
    Expr,
    KeyExpr,
    Where,
    compile_expression,
    compile_key,
    compile_value,
    env_refs,
)
from engine.units import parse_size

# The keys of a flow file, its trigger and every step, declared once: validation, the JSON Schema
# (engine.schema) and the docs' key tables read them.
FLOW_FIELDS = (
    Field("id", "id", "The flow's id: its trigger URL is /hooks/<id>. Default: the file name.", example="orders"),
    Field("name", "str", "A title for people."),
    Field("description", "str", "What the flow is for."),
    Field("trigger", "trigger", "How webhooks are verified, deduplicated, ordered and indexed."),
    Field("steps", "steps", "The steps run for each event, in order.", required=True),
    Field("on_failure", "steps", "Steps run once when a run fails for good, with `error` in scope."),
    Field("defaults", "defaults", "Keys every step of a type gets unless it sets them, per type.",
          example="{http: {connection: crm, timeout: 10s}}"),
)
TRIGGER_FIELDS = (
    Field("verify", "verify", "Signature or token verification: a provider and its secret."),
    Field("dedupe", "key", "One run per value: a JSONPath into the body or header:<Name>.", example="$.id"),
    Field("order_by", "key", "Runs with the same value run one after the other.", example="$.order.id"),
    Field("max_body", "size", "Largest body accepted for this flow.", example="1MiB"),
    Field("index", "keys", "Values to search runs by: name -> JSONPath or header:<Name>, or "
          "{path: ..., lower: true} to find it whatever its case.", example="{order_id: $.id}"),
    Field("redact_headers", "headers", "Request headers stored as [redacted].", example="[X-Api-Key]"),
    Field("verify_token", "str", "Token answered in GET hub.challenge handshakes (Meta, Strava)."),
)
STEP_FIELDS = (
    Field("id", "step_id", "Unique in the flow; read as steps.<id>.", required=True),
    Field("when", "expression", "A bare expression; false skips the step."),
    Field("on_error", "enum", "continue: a failure for good is kept in steps.<id>.error and the run goes on.",
          default="fail", choices=("fail", "continue")),
    Field("description", "str", "What the step is for."),
    Field("name", "str", "Same as description."),
)
FLOW_KEYS = tuple(f.name for f in FLOW_FIELDS)
TRIGGER_KEYS = tuple(f.name for f in TRIGGER_FIELDS)
STEP_COMMON = tuple(f.name for f in STEP_FIELDS)
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
STEP_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


# --- YAML with line numbers --------------------------------------------------------------------


MAX_NODES = 50_000  # YAML nodes one flow may expand to (aliases included): no "billion laughs"


class _Doc:
    """A parsed YAML document: plain values plus the line of every key path."""

    def __init__(self, file: str, text: str = "") -> None:
        self.file = file
        self.text = text
        self.lines: dict[str, int] = {}
        self.errors: list[FlowError] = []
        self.step_ids: list[tuple[str, str]] = []  # (id, key path) of every step, nested ones included
        self.defaults: dict[str, dict[str, Any]] = {}  # `defaults:` per step type
        self.nodes = 0
        self._constructor = yaml.SafeLoader("")

    def line_of(self, mark: yaml.Mark) -> int:
        """Line numbers count newlines only (PyYAML also breaks lines at U+0085, U+2028 and U+2029)."""
        return self.text.count("\n", 0, mark.index) + 1 if self.text else mark.line + 1

    def convert(self, node: yaml.Node, path: str) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooLarge(f"the document expands to more than {MAX_NODES} YAML nodes (aliases included)")
        self.lines.setdefault(path, self.line_of(node.start_mark))
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            merged_keys: set[str] = set()  # from `<<:`; the mapping's own keys override them (YAML merge spec)
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    merged = self.convert(value_node, path)
                    for m in merged if isinstance(merged, list) else [merged]:
                        if isinstance(m, dict):
                            for k, v in m.items():
                                if k not in out:
                                    out[k] = v
                                    merged_keys.add(k)
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    self.error("keys must be plain strings", self.line_of(key_node.start_mark), path)
                    continue
                key = str(key_node.value)
                sub = f"{path}.{key}" if path else key
                if key in out and key not in merged_keys:
                    self.error(f"duplicate key {key!r}", self.line_of(key_node.start_mark), sub)
                merged_keys.discard(key)
                self.lines[sub] = self.line_of(key_node.start_mark)
                out[key] = self.convert(value_node, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        return self._constructor.construct_object(node, deep=True)

    def error(self, message: str, line: int | None, path: str) -> None:
        self.errors.append(FlowError(message, file=self.file, line=line, path=path))

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rsplit(".", 1)[0] if "." in path else (path.rsplit("[", 1)[0] if "[" in path else "")
        return self.lines.get("")

    def where(self, path: str) -> Where:
        return Where(self.file, self.line(path), path)


class _TooLarge(Exception):
    pass


MAX_DEPTH = 200


def _bracket_depth(text: str) -> int:
    """Deepest nesting of flow collections ([ and {), counted cheaply: PyYAML takes seconds to give up
    on thousands of levels, so absurd depths are refused before it starts."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}" and depth:
            depth -= 1
    return deepest


def parse_yaml(text: str, file: str) -> tuple[Any, _Doc]:
    """Parse text; YAML syntax errors become one FlowError with the line PyYAML reports."""
    doc = _Doc(file, text)
    if _bracket_depth(text) > MAX_DEPTH:
        raise FlowInvalid(file, [FlowError("YAML nested too deeply", file=file)])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise FlowInvalid(file, [FlowError("YAML nested too deeply", file=file)]) from None
    except yaml.MarkedYAMLError as exc:
        line = _error_line(exc, doc)
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise FlowInvalid(file, [FlowError(f"YAML syntax error: {problem}", file=file, line=line)]) from None
    except yaml.YAMLError as exc:
        raise FlowInvalid(file, [FlowError(f"YAML error: {str(exc).splitlines()[0]}", file=file)]) from None
    if node is None:
        return None, doc
    try:
        value = doc.convert(node, "")
    except (_TooLarge, RecursionError) as exc:
        message = str(exc) if isinstance(exc, _TooLarge) else "YAML nested too deeply"
        raise FlowInvalid(file, [FlowError(message, file=file, line=1)]) from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise FlowInvalid(file, [FlowError(f"YAML error: {str(exc).splitlines()[0]}", file=file)]) from None
    return value, doc


def _error_line(exc: yaml.MarkedYAMLError, doc: _Doc) -> int | None:
    """The line a person must fix, as an editor numbers it. PyYAML marks where it gave up: for a key
    without its colon that is the next line, and for an unclosed quote or bracket the end of the file
    (past the last line); the construct's start (``context_mark``) is the line to show then."""
    problem, context = exc.problem_mark, exc.context_mark
    at_end = problem is not None and doc.text[problem.index :].strip() == ""
    if context is not None and (problem is None or at_end or exc.context == "while scanning a simple key"):
        return doc.line_of(context)
    if problem is None:
        return None
    return min(doc.line_of(problem), max(1, len(doc.text.rstrip().split("\n"))))


# --- flow validation -----------------------------------------------------------------------------


def load_flow(text: str, file: str = "<flow>", *, flow_id: str | None = None) -> Flow:
    """Parse and validate one flow file's text; raise FlowInvalid listing every problem."""
    if "\x00" in text:
        raise FlowInvalid(file, [FlowError("not a text file (contains NUL bytes)", file=file)])
    raw, doc = parse_yaml(text, file)
    if not isinstance(raw, dict):
        doc.error("a flow must be a mapping with at least `steps:`", doc.line(""), "")
        raise FlowInvalid(file, doc.errors)
    for key in raw:
        if key not in FLOW_KEYS and not str(key).startswith("x-"):  # x-*: anchors for YAML merge keys
            doc.error(f"unknown key {key!r}; expected one of: {', '.join(FLOW_KEYS)}", doc.line(key), key)
    default_id = Path(file).stem if file and not file.startswith("<") else "flow"
    fid = raw.get("id", flow_id or default_id)
    if not isinstance(fid, str) or not ID_RE.match(fid):
        doc.error("id must be letters, digits, _ or - (it is the trigger URL /hooks/<id>)", doc.line("id"), "id")
        fid = str(fid)
    name = raw.get("name", fid)
    if not isinstance(name, str):
        doc.error("name must be a string", doc.line("name"), "name")
    description = raw.get("description", "")
    trigger = _trigger(raw.get("trigger"), doc)
    if raw.get("steps") is None:
        doc.error("a flow needs `steps:` (a list)", doc.line(""), "steps")
    doc.defaults = _defaults(raw.get("defaults"), doc)
    steps = _block(raw.get("steps"), doc, "steps", required=False)
    on_failure = _block(raw.get("on_failure"), doc, "on_failure", required=False)
    by_id = _check_ids([("steps", steps), ("on_failure", on_failure)], doc)
    where: dict[str, str] = {}
    _scopes(steps + on_failure, where)
    order: dict[str, int] = {}
    for step in walk(steps + on_failure):
        order.setdefault(step.id, len(order))
    visible = _check_refs(steps, set(), order, doc, where)
    _check_refs(on_failure, visible, order, doc, where)
    if doc.errors:
        raise FlowInvalid(file, doc.errors)
    names = {ref.name for step in walk(steps + on_failure) for _, expr in step_exprs(step) for ref in env_refs(expr)}
    return Flow(
        id=fid,
        name=str(name),
        description=str(description or ""),
        steps=steps,
        trigger=trigger,
        path=file,
        source=text,
        version=version_of(text),
        env_names=frozenset(names),
        on_failure=on_failure,
        by_id=by_id,
    )


def version_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _trigger(raw: Any, doc: _Doc) -> Trigger:
    if raw is None:
        return Trigger()
    if not isinstance(raw, dict):
        doc.error("trigger must be a mapping", doc.line("trigger"), "trigger")
        return Trigger()
    for key in raw:
        if key not in TRIGGER_KEYS:
            doc.error(f"unknown key {key!r}; expected one of: {', '.join(TRIGGER_KEYS)}", doc.line(f"trigger.{key}"),
                      f"trigger.{key}")
    verify = None
    if raw.get("verify") is not None:
        from engine.presets import parse_verify

        if not isinstance(raw["verify"], dict):
            doc.error("verify must be a mapping with a provider", doc.line("trigger.verify"), "trigger.verify")
        else:
            verify, problems = parse_verify(raw["verify"])
            for key, message in problems:
                path = f"trigger.verify.{key}" if key else "trigger.verify"
                doc.error(message, doc.line(path), path)

    def key_expr(name: str) -> KeyExpr | None:
        value = raw.get(name)
        if value is None:
            return None
        try:
            return compile_key(str(value))
        except ValueError as exc:
            doc.error(f"invalid key expression {value!r}: {exc}", doc.line(f"trigger.{name}"), f"trigger.{name}")
            return None

    max_body = raw.get("max_body")
    if max_body is not None:
        max_body = _size(max_body, doc, "trigger.max_body")
    index: dict[str, KeyExpr] = {}
    if raw.get("index") is not None:
        if not isinstance(raw["index"], dict):
            doc.error("index must map names to JSONPaths", doc.line("trigger.index"), "trigger.index")
        else:
            for name, value in raw["index"].items():
                expr = _index_key(str(name), value, doc)
                if expr is not None:
                    index[str(name)] = expr
    redact = raw.get("redact_headers") or []
    if not isinstance(redact, list) or not all(isinstance(h, str) for h in redact):
        doc.error("redact_headers must be a list of header names", doc.line("trigger.redact_headers"),
                  "trigger.redact_headers")
        redact = []
    token = raw.get("verify_token")
    return Trigger(
        verify=verify,
        dedupe=key_expr("dedupe"),
        order_by=key_expr("order_by"),
        max_body=max_body,
        index=index,
        redact_headers=tuple(h.lower() for h in redact),
        verify_token=str(token) if token is not None else None,
    )


INDEX_KEYS = ("path", "lower")


def _index_key(name: str, value: Any, doc: _Doc) -> KeyExpr | None:
    """``name: $.path`` or ``name: {path: $.path, lower: true}``; a value that resolves to nothing is kept as
    ``""`` (a marker the flow page counts)."""
    path = f"trigger.index.{name}"
    lower = False
    if isinstance(value, dict):
        for key in value:
            if key not in INDEX_KEYS:
                doc.error(f"unknown key {key!r}; expected one of: {', '.join(INDEX_KEYS)}", doc.line(f"{path}.{key}"),
                          f"{path}.{key}")
        if not isinstance(value.get("lower", False), bool):
            doc.error("lower must be true or false", doc.line(f"{path}.lower"), f"{path}.lower")
        lower = value.get("lower") is True
        if value.get("path") is None:
            doc.error("an index field needs a path: a JSONPath or header:<Name>", doc.line(path), path)
            return None
        path, value = f"{path}.path", value["path"]
    try:
        return compile_key(str(value), lower=lower, missing="")
    except ValueError as exc:
        doc.error(f"invalid key expression {value!r}: {exc}", doc.line(path), path)
        return None


def _size(value: Any, doc: _Doc, path: str) -> int | None:
    try:
        return parse_size(value)
    except ValueError as exc:
        doc.error(str(exc), doc.line(path), path)
        return None


def _defaults(raw: Any, doc: _Doc) -> dict[str, dict[str, Any]]:
    """``defaults: {http: {...}}``: keys merged into every step of that type (types whose value is a mapping)."""
    if raw is None:
        return {}
    mapped = sorted(name for name, st in REGISTRY.items() if st.shape == "fields")
    if not isinstance(raw, dict):
        doc.error(f"defaults must map a step type ({', '.join(mapped)}) to its default keys", doc.line("defaults"),
                  "defaults")
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        path = f"defaults.{name}"
        if name not in mapped:
            doc.error(f"no defaults for {name!r}; defaults apply to: {', '.join(mapped)}", doc.line(path), path)
        elif not isinstance(value, dict):
            doc.error(f"defaults.{name} must be a mapping of {name} keys", doc.line(path), path)
        else:
            known = {f.name for f in REGISTRY[name].fields}
            for key in value:
                if key not in known:
                    doc.error(f"unknown key {key!r}; expected one of: {', '.join(sorted(known))}",
                              doc.line(f"{path}.{key}"), f"{path}.{key}")
            out[name] = {k: v for k, v in value.items() if k in known}
    return out


def _block(raw: Any, doc: _Doc, path: str, *, required: bool = True) -> tuple[Step, ...]:
    """A list of steps (the flow's, ``on_failure``'s or a container's), parsed depth first."""
    if raw is None:
        if required:
            doc.error(f"`{path.rsplit('.', 1)[-1]}:` needs a list of steps", doc.line(path), path)
        return ()
    if not isinstance(raw, list) or not raw:
        doc.error(f"{path.rsplit('.', 1)[-1]} must be a non-empty list of steps", doc.line(path), path)
        return ()
    steps = [_step(item, i, f"{path}[{i}]", doc) for i, item in enumerate(raw)]
    return tuple(s for s in steps if s is not None)


def _check_ids(blocks: list[tuple[str, tuple[Step, ...]]], doc: _Doc) -> dict[str, Step]:
    """Step ids are unique across the whole flow (they name ``steps.<id>``, stubs and records)."""
    first: dict[str, str] = {}
    for sid, path in doc.step_ids:
        if sid in first:
            doc.error(f"duplicate step id {sid!r} (first used by {first[sid]})", doc.line(f"{path}.id"), f"{path}.id")
        else:
            first[sid] = path
    by_id: dict[str, Step] = {}
    for _name, steps in blocks:
        for step in walk(steps):
            by_id.setdefault(step.id, step)
    return by_id


def _check_refs(steps: tuple[Step, ...], visible: set[str], order: Mapping[str, int], doc: _Doc,
                where: dict[str, str]) -> set[str]:
    """``steps.<id>`` must name a step that has run by then: earlier in this list or an enclosing one, or in
    a branch of an earlier switch (null when not taken); a foreach's own steps are read as its output.
    Returns the ids visible after this list."""
    visible = set(visible)
    for step in steps:
        inside = _inside(step)
        for expr_path, expr in step_exprs(step):
            for ref, at in expr.step_refs():
                problem = None
                if ref not in order:
                    problem = f"unknown step {ref!r} in steps.{ref}"
                elif ref not in visible and ref not in inside:
                    if order[ref] > order[step.id]:
                        problem = f"steps.{ref} is not available yet: step {ref!r} runs at or after this one"
                    else:
                        problem = (f"steps.{ref} is inside {where.get(ref, 'another branch')} and cannot be read here"
                                   " (read a foreach's items as steps.<foreach id>)")
                if problem:
                    doc.errors.append(TemplateError(problem, file=at.file, line=at.line, path=at.path or expr_path))
        after_children: set[str] = set()
        if step.config is not None:
            for block in REGISTRY[step.type].children(step.config):
                inner = _check_refs(block.steps, visible, order, doc, where)
                if not block.scoped:
                    after_children |= inner - visible
        visible.add(step.id)
        visible |= after_children
    return visible


def _inside(step: Step) -> set[str]:
    """Ids declared inside ``step``: a container's own values may read them (foreach `output:`)."""
    return {s.id for s in walk((step,))} - {step.id}


def _scopes(steps: tuple[Step, ...], where: dict[str, str]) -> None:
    """Which container each nested id belongs to, for error messages."""
    for step in steps:
        if step.config is None:
            continue
        for block in REGISTRY[step.type].children(step.config):
            for inner in walk(block.steps):
                where.setdefault(inner.id, f"{step.type} {step.id!r}")
            _scopes(block.steps, where)


def step_exprs(step: Step) -> list[tuple[str, Expr]]:
    """The step's own compiled values (its `when` and config, not its children's): for references and env names."""
    out: list[tuple[str, Expr]] = []
    if step.when is not None:
        out.append(("when", step.when))

    def collect(value: Any, label: str) -> None:
        if isinstance(value, Expr):
            out.append((label, value))
        elif isinstance(value, Step):
            return
        elif isinstance(value, tuple | list):
            for v in value:
                collect(v, label)
        elif isinstance(value, dict):
            for k, v in value.items():
                collect(v, f"{label}.{k}")
        elif hasattr(value, "__dataclass_fields__"):
            for k in value.__dataclass_fields__:
                collect(getattr(value, k), f"{label}.{k}")

    collect(step.config, step.type)
    return out


def _step(item: Any, index: int, path: str, doc: _Doc) -> Step | None:
    if not isinstance(item, dict):
        doc.error("a step must be a mapping with an id and one step type", doc.line(path), path)
        return None
    sid = item.get("id")
    if sid is None:
        doc.error("every step needs an `id`", doc.line(path), f"{path}.id")
        sid = f"step{index + 1}"
    elif not isinstance(sid, str) or not STEP_ID_RE.match(sid):
        doc.error("step id must be a letter or _ followed by letters, digits or _ (it is used as steps.<id>)",
                  doc.line(f"{path}.id"), f"{path}.id")
        sid = str(sid)
    if isinstance(item.get("id"), str):
        doc.step_ids.append((sid, path))
    types = [k for k in item if k in REGISTRY]
    if len(types) != 1:
        for key in item:
            if key not in REGISTRY and key not in STEP_COMMON and not any(key in _option_names(t) for t in REGISTRY):
                doc.error(f"unknown key {key!r}; a step has {', '.join(STEP_COMMON)} and one of: "
                          f"{', '.join(sorted(REGISTRY))}", doc.line(f"{path}.{key}"), f"{path}.{key}")
        if not types:
            doc.error(f"step {sid!r} needs one step type: {', '.join(sorted(REGISTRY))}", doc.line(path), path)
        else:
            doc.error(f"step {sid!r} has several step types ({', '.join(types)}); split it into steps",
                      doc.line(path), path)
        return None
    type_name = types[0]
    step_type = REGISTRY[type_name]
    options = _option_names(type_name)
    for key in item:
        if key not in REGISTRY and key not in STEP_COMMON and key not in options:
            allowed = ", ".join((*STEP_COMMON, *options))
            hint = ""
            if any(key in _option_names(t) for t in REGISTRY):
                owners = sorted(t for t in REGISTRY if key in _option_names(t))
                hint = f" ({key!r} belongs to {', '.join(owners)} steps)"
            doc.error(f"unknown key {key!r}{hint}; a {type_name} step has {allowed}", doc.line(f"{path}.{key}"),
                      f"{path}.{key}")
    when = None
    if item.get("when") is not None:
        when = _compile(lambda: compile_expression(str(item["when"]), doc.where(f"{path}.when")), doc)
    on_error = item.get("on_error", "fail")
    if on_error not in ("fail", "continue"):
        doc.error("on_error must be fail (the default) or continue", doc.line(f"{path}.on_error"), f"{path}.on_error")
        on_error = "fail"
    raw_config = item[type_name]
    if isinstance(raw_config, dict) and type_name in doc.defaults:  # the step's own keys win, as with <<:
        raw_config = {**doc.defaults[type_name], **raw_config}
    config = _config(step_type, raw_config, f"{path}.{type_name}", doc, item, path)
    return Step(id=sid, type=type_name, config=config, when=when, line=doc.line(path), index=index,
                description=str(item.get("description") or item.get("name") or ""), on_error=on_error)


def _option_names(type_name: str) -> tuple[str, ...]:
    return tuple(f.name for f in REGISTRY[type_name].options)


def _compile(fn: Any, doc: _Doc) -> Any:
    try:
        return fn()
    except FlowError as exc:
        doc.errors.append(exc)
        return None


def _config(step_type: StepType, raw: Any, path: str, doc: _Doc, item: Mapping[str, Any], step_path: str) -> Any:
    where = doc.where(path)
    if step_type.shape == "expression":
        if not isinstance(raw, str | bool) or raw == "":
            doc.error("expected an expression, e.g. event.type == \"paid\"", where.line, path)
            return None
        value: Any = _compile(lambda: compile_expression(str(raw), where), doc)
    elif step_type.shape == "value":
        value = compile_value(raw, where, doc.lines, doc.errors)
    elif not isinstance(raw, dict):
        doc.error(f"{step_type.name} takes a mapping of: {', '.join(f.name for f in step_type.fields)}", where.line,
                  path)
        return None
    else:
        value = _fields(step_type.fields, raw, path, doc)
    if step_type.options:
        value = {"value": value, **_fields(step_type.options, {k: item[k] for k in item if k in
                                                                {f.name for f in step_type.options}}, step_path, doc)}
    try:
        return step_type.build(value)
    except (ValueError, KeyError, TypeError) as exc:
        doc.error(str(exc), where.line, path)
        return None


def _fields(spec: tuple[Field, ...], raw: Mapping[str, Any], path: str, doc: _Doc) -> dict[str, Any]:
    by_name = {f.name: f for f in spec}
    for key in raw:
        if key not in by_name:
            doc.error(f"unknown key {key!r}; expected one of: {', '.join(by_name)}", doc.line(f"{path}.{key}"),
                      f"{path}.{key}")
    out: dict[str, Any] = {}
    for f in spec:
        sub = f"{path}.{f.name}"
        if f.name not in raw or raw[f.name] is None:
            if f.required:
                doc.error(f"{f.name} is required ({f.help})", doc.line(path), sub)
            out[f.name] = _default(f)
            continue
        out[f.name] = _field_value(f, raw[f.name], sub, doc)
    return out


def parse_fields(spec: tuple[Field, ...], raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    """``raw`` checked and parsed by ``spec`` outside any flow file (a setting's JSON), with the flow rules;
    raises the first problem as a FlowError naming its key path (``crm.example.com.concurency: unknown key``)."""
    doc = _Doc("")
    out = _fields(spec, raw, path, doc)
    if doc.errors:
        raise doc.errors[0]
    return out


def _default(f: Field) -> Any:
    if f.kind == "statuses" and f.default is not None:
        return parse_statuses(list(f.default))
    if f.kind == "fields":
        return {g.name: g.default for g in f.fields}
    return f.default


def _field_value(f: Field, value: Any, path: str, doc: _Doc) -> Any:
    line = doc.line(path)
    try:
        if f.kind == "template":
            return compile_value(value, doc.where(path), doc.lines, doc.errors)
        if f.kind == "str":
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
        if f.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError("expected a positive whole number")
            return value
        if f.kind == "expression":
            if not isinstance(value, str | bool) or value == "":
                raise ValueError("expected an expression, e.g. event.type == \"paid\"")
            return compile_expression(str(value), doc.where(path))
        if f.kind == "steps":
            return _block(value, doc, path)
        if f.kind == "list":
            if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
                raise ValueError(f"expected a list of mappings of: {', '.join(g.name for g in f.fields)}")
            return [_fields(f.fields, v, f"{path}[{i}]", doc) for i, v in enumerate(value)]
        if f.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if f.kind == "duration":
            return parse_duration(value)
        if f.kind == "enum":
            text = str(value)
            match = [c for c in f.choices if c.lower() == text.lower()]
            if not match:
                raise ValueError(f"expected one of {', '.join(f.choices)}, got {text!r}")
            return match[0]
        if f.kind == "statuses":
            return parse_statuses(value)
        if f.kind == "hosts":
            if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
                raise ValueError("expected a list of host names")
            return tuple(value)
        if f.kind == "fields":
            if not isinstance(value, dict):
                raise ValueError(f"expected a mapping of: {', '.join(g.name for g in f.fields)}")
            return _fields(f.fields, value, path, doc)
    except FlowError as exc:
        doc.errors.append(exc)
        return None
    except (ValueError, TypeError) as exc:
        doc.error(str(exc), line, path)
        return None
    raise AssertionError(f"unknown field kind {f.kind}")


def load_flow_file(path: str | Path) -> Flow:
    """Read and load one file; unreadable or binary files are FlowInvalid too."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise FlowInvalid(str(p), [FlowError("not a UTF-8 text file", file=str(p))]) from None
    except OSError as exc:
        raise FlowInvalid(str(p), [FlowError(f"cannot read: {exc.strerror}", file=str(p))]) from None
    return load_flow(text, str(p))


def id_line(flow: Flow) -> int:
    """The line of the flow's ``id:`` key; 1 when its id comes from the file name."""
    try:
        _, doc = parse_yaml(flow.source, flow.path)
    except FlowInvalid:
        return 1
    return doc.lines.get("id", 1)


def missing_env_vars(flow: Flow, env: Mapping[str, str]) -> list[str]:
    """``${VAR}`` names the flow uses that have no value here and no default."""
    missing: list[str] = []
    for step in walk(flow.steps + flow.on_failure):
        for _, expr in step_exprs(step):
            for ref in env_refs(expr):
                if not env.get(ref.name) and ref.default is None and ref.name not in missing:
                    missing.append(ref.name)
    if flow.trigger.verify is not None:
        sources = [*flow.trigger.verify.secrets, *(str(v) for v in flow.trigger.verify.options.values())]
        for text in sources:
            for ref in envrefs.refs(text):
                if not env.get(ref.name) and ref.default is None and ref.name not in missing:
                    missing.append(ref.name)
    return missing
