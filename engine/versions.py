"""What changed between two versions of one flow: the line diff operators read before choosing a version,
and which of a run's kept steps a retry on the newer version may keep.

A retry from the failed step keeps what the parent finished for good. On the run's own version that is
always right. On another version a kept record is only kept when its step is still there at the same
path (same containers, same case) with the same definition (its YAML mapping with the flow's
``defaults:`` merged in; ``description`` and ``name`` aside, child steps compared on their own). A pure
step that changed is simply computed again. A call (a step with side effects) that changed or moved
cannot be kept, and running it again would send it twice: ``conflict`` names it so the retry is refused
(docs/operations.md, "Replay and retry"). A call the newer version no longer has is dropped, unless
the newer version has the same definition under another id: a renamed call conflicts too.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.loader import parse_yaml
from engine.model import Flow, Step, step_id_of
from engine.steps import REGISTRY, Field

_ITEM = re.compile(r"\[[^\]]*\]")  # foreach item keys in a path (their brackets are escaped, engine.steps.foreach)
_NOT_DEFINITION = ("description", "name")
CONTEXT = 3
"""Unchanged lines shown around each change in a diff; longer unchanged runs fold into one row."""


def shape(path: str) -> str:
    """``lines[sku-1].reserve`` -> ``lines[*].reserve``: a path with its item keys left out."""
    return _ITEM.sub("[*]", path)


def _shapes(steps: Sequence[Step], prefix: str, ancestors: tuple[str, ...],
            out: dict[str, tuple[str, tuple[str, ...]]]) -> None:
    for step in steps:
        path = prefix + step.id
        out[step.id] = (path, ancestors)
        if step.config is None:
            continue
        for block in REGISTRY[step.type].children(step.config):
            inner = f"{path}[*]." if block.scoped else f"{path}.{block.label}."
            _shapes(block.steps, inner, (*ancestors, step.id), out)


def _child_lists(item: dict[str, Any], kind: str) -> list[list[Any]]:
    """The child step lists of a step mapping of type ``kind``, found through its spec (its options and the
    fields of kind ``steps``, nested ``fields``/``list`` ones included): only these hold steps. A list of
    ``{id: ...}`` mappings elsewhere (an http body's lines) is data and part of the definition."""
    found: list[list[Any]] = []

    def look(mapping: Any, fields: Sequence[Field]) -> None:
        if not isinstance(mapping, dict):
            return
        for f in fields:
            value = mapping.get(f.name)
            if f.kind == "steps" and isinstance(value, list):
                found.append(value)
            elif f.kind == "fields":
                look(value, f.fields)
            elif f.kind == "list" and isinstance(value, list):
                for entry in value:
                    look(entry, f.fields)

    spec = REGISTRY[kind]
    look(item, spec.options)
    look(item.get(kind), spec.fields)
    return found


def _without(value: Any, lists: Collection[int]) -> Any:
    """A copy of ``value`` with the child step lists (by identity) left empty: they are compared on their own."""
    if isinstance(value, dict):
        return {k: _without(v, lists) for k, v in value.items()}
    if isinstance(value, list):
        return [] if id(value) in lists else [_without(v, lists) for v in value]
    return value


def _without_id(definition: str | None) -> Any:
    if definition is None:
        return None
    value = json.loads(definition)
    value.pop("id", None)
    return value


def definitions(source: str) -> dict[str, str]:
    """Step id -> its definition as canonical JSON, from a flow version's YAML source."""
    raw, _ = parse_yaml(source, "<flow version>")
    if not isinstance(raw, dict):
        return {}
    found = raw.get("defaults")
    defaults: dict[str, Any] = found if isinstance(found, dict) else {}
    out: dict[str, str] = {}

    def visit(steps: Any) -> None:
        for item in steps if isinstance(steps, list) else ():
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            kind = next((k for k in item if k in REGISTRY), None)
            children = _child_lists(item, kind) if kind is not None else []
            step = {k: v for k, v in item.items() if k not in _NOT_DEFINITION}
            for key, conf in step.items():
                if key in REGISTRY and isinstance(conf, dict) and isinstance(defaults.get(key), dict):
                    step[key] = {**defaults[key], **conf}
            out[item["id"]] = json.dumps(_without(step, {id(c) for c in children}), sort_keys=True, default=str)
            for child in children:
                visit(child)

    visit(raw.get("steps"))
    visit(raw.get("on_failure"))
    return out


@dataclass
class Compatibility:
    """Which kept records of a run on ``old`` a retry on ``new`` keeps, and which calls block it."""

    old: Flow
    new: Flow
    _old: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict, init=False)
    _new: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict, init=False)
    _old_defs: dict[str, str] = field(default_factory=dict, init=False)
    _new_defs: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        _shapes(self.old.steps, "", (), self._old)
        _shapes(self.new.steps, "", (), self._new)
        self._old_defs = definitions(self.old.source)
        self._new_defs = definitions(self.new.source)

    def _same(self, step_id: str) -> bool:
        return step_id in self._new_defs and self._old_defs.get(step_id) == self._new_defs[step_id]

    def _renamed(self, sid: str) -> str | None:
        """A step new to ``new`` whose definition, its id aside, is that of ``sid``: the same call renamed,
        which running again would send twice."""
        body = _without_id(self._old_defs.get(sid))
        return next((i for i, d in self._new_defs.items() if i not in self._old_defs and _without_id(d) == body),
                    None) if body is not None else None

    def keeps(self, path: str) -> bool:
        """The step at ``path`` is in ``new`` at the same place with the same definition, and so are its containers."""
        sid = step_id_of(path)
        if sid not in self._new or sid not in self._old or self._new[sid][0] != shape(path):
            return False
        return self._old[sid] == self._new[sid] and all(self._same(i) for i in (*self._new[sid][1], sid))

    def conflict(self, path: str, status: str = "succeeded") -> str | None:
        """Why a kept call that ran (``status``: succeeded, or continued after failing) blocks a retry on
        ``new`` because it changed, moved or was renamed there; None when it does not."""
        sid = step_id_of(path)
        step = self.old.by_id.get(sid)
        if step is None or not REGISTRY[step.type].side_effects or self.keeps(path):
            return None
        ran = "already succeeded" if status == "succeeded" else "already ran (its failure was continued)"
        if sid not in self._new:
            renamed = self._renamed(sid)
            return f"step {path} {ran} and is {renamed} in the current version (renamed)" if renamed else None
        if self._new[sid][0] != shape(path) or self._old[sid][1] != self._new[sid][1]:
            return f"step {path} {ran} and moved in the current version ({self._new[sid][0]})"
        changed = next(i for i in (*self._new[sid][1], sid) if not self._same(i))
        what = "" if changed == sid else f" (its container {changed} changed)"
        return f"step {path} {ran} and changed in the current version{what}"


def line_diff(old: str, new: str, context: int = CONTEXT) -> list[dict[str, Any]]:
    """Side-by-side rows: ``{"tag": equal|changed|removed|added|fold, "old": [n, text]|None, "new": ...}``.

    Unchanged runs longer than twice ``context`` fold into one ``fold`` row saying how many lines it hides.
    """
    a, b = old.splitlines(), new.splitlines()
    rows: list[dict[str, Any]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            pairs = list(zip(range(i1, i2), range(j1, j2), strict=True))
            if len(pairs) > 2 * context + 1:
                head = pairs[:context] if rows else []
                tail = pairs[-context:] if i2 < len(a) or j2 < len(b) else []
                hidden = len(pairs) - len(head) - len(tail)
                rows += [_row("equal", a, b, i, j) for i, j in head]
                rows.append({"tag": "fold", "old": None, "new": None, "lines": hidden})
                rows += [_row("equal", a, b, i, j) for i, j in tail]
            else:
                rows += [_row("equal", a, b, i, j) for i, j in pairs]
            continue
        left, right = list(range(i1, i2)), list(range(j1, j2))
        for k in range(max(len(left), len(right))):
            i = left[k] if k < len(left) else None
            j = right[k] if k < len(right) else None
            rows.append(_row("changed" if i is not None and j is not None else "removed" if j is None else "added",
                             a, b, i, j))
    return rows


def _row(tag: str, a: list[str], b: list[str], i: int | None, j: int | None) -> dict[str, Any]:
    return {"tag": tag, "old": [i + 1, a[i]] if i is not None else None, "new": [j + 1, b[j]] if j is not None else None}


def version_change(original: str, current: str | None, sources: Mapping[str, str]) -> dict[str, Any]:
    """The JSON shape pages and the API share: both versions, whether they differ, and the diff rows."""
    changed = current is not None and current != original
    diff = line_diff(sources.get(original, ""), sources.get(current or "", "")) if changed else []
    return {"original": original, "current": current, "changed": changed, "diff": diff}
