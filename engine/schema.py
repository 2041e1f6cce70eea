"""A JSON Schema for flow files, generated from the same declarations the loader validates with.

Editors with yaml-language-server (VS Code's YAML extension, Neovim, JetBrains) complete and check a
flow as it is typed when the file starts with::

    # yaml-language-server: $schema=../docs/flow.schema.json

The schema is checked in at ``docs/flow.schema.json`` and served at ``/schemas/flow.json``;
``python -m engine.schema`` rewrites the file, ``--check`` says whether it is stale. It describes
shapes only: templates, JSONPaths and step references are still checked by ``hookline validate``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.loader import FLOW_FIELDS, ID_RE, STEP_FIELDS, STEP_ID_RE, TRIGGER_FIELDS
from engine.presets import REGISTRY as PRESETS
from engine.presets import Field as PresetField
from engine.steps import REGISTRY, Field

PATH = Path(__file__).resolve().parent.parent / "docs" / "flow.schema.json"
SCHEMA_ID = "https://hookline.dev/schemas/flow.json"

_DURATION = {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"}]}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_KINDS: dict[str, Any] = {
    "str": {"type": "string"},
    "int": {"type": "integer", "minimum": 1},
    "bool": {"type": "boolean"},
    "duration": _DURATION,
    "template": {},
    "expression": {"type": ["string", "boolean"]},
    "statuses": {"type": "array", "items": {"type": ["integer", "string"]}},
    "hosts": _STRINGS,
    "headers": _STRINGS,
    "steps": {"$ref": "#/$defs/steps"},
    "trigger": {"$ref": "#/$defs/trigger"},
    "verify": {"$ref": "#/$defs/verify"},
    "key": {"type": "string", "pattern": r"^\s*(\$|header:)"},
    "keys": {"type": "object", "additionalProperties": {"oneOf": [
        {"type": "string", "pattern": r"^\s*(\$|header:)"},
        {"type": "object", "required": ["path"], "additionalProperties": False, "properties": {
            "path": {"type": "string", "pattern": r"^\s*(\$|header:)"}, "lower": {"type": "boolean"}}},
    ]}},
    "size": {"type": ["integer", "string"]},
    "id": {"type": "string", "pattern": ID_RE.pattern},
    "step_id": {"type": "string", "pattern": STEP_ID_RE.pattern},
    "defaults": {"$ref": "#/$defs/defaults"},
}


def _field(f: Field) -> dict[str, Any]:
    if f.kind == "enum":
        out: dict[str, Any] = {"enum": [*f.choices, *(c.upper() for c in f.choices if c.upper() != c)]}
    elif f.kind == "fields":
        out = _object(f.fields)
    elif f.kind == "list":
        out = {"type": "array", "minItems": 1, "items": _object(f.fields)}
    else:
        out = dict(_KINDS[f.kind])
    out["description"] = f.help
    if f.default is not None and f.kind not in ("statuses", "fields"):
        out["default"] = f.default
    return out


def _object(fields: Sequence[Field], extra: dict[str, Any] | None = None, required: Sequence[str] = ()) -> dict[str, Any]:
    props = {f.name: _field(f) for f in fields}
    props.update(extra or {})
    req = sorted({*(f.name for f in fields if f.required), *required})
    return {"type": "object", "properties": props, "additionalProperties": False, **({"required": req} if req else {})}


def _step_type(name: str) -> dict[str, Any]:
    st = REGISTRY[name]
    if st.shape == "expression":
        value: dict[str, Any] = {"type": ["string", "boolean"]}
    elif st.shape == "value":
        value = {}
    else:
        value = _object(st.fields)
    value["description"] = st.help
    return _object((*STEP_FIELDS, *st.options), {name: value}, required=[name])


def _preset_field(f: PresetField) -> dict[str, Any]:
    if f.kind == "secret":
        out: dict[str, Any] = {"anyOf": [{"type": "string"}, _STRINGS]}
    elif f.kind == "enum":
        out = {"enum": list(f.choices)}
    elif f.kind == "duration":
        out = dict(_DURATION)
    else:
        out = {"type": "string"}
    out["description"] = f.help
    return out


def _verify() -> dict[str, Any]:
    """`provider` picks the preset; each preset's keys apply when it is picked (if/then per provider)."""
    rules = []
    for name in sorted(PRESETS):
        preset = PRESETS[name]
        props: dict[str, Any] = {"provider": {"const": name, "description": preset.title}}
        props.update({f.name: _preset_field(f) for f in preset.fields})
        required = ["provider", *(f.name for f in preset.fields if f.required)]
        rules.append({"if": {"properties": {"provider": {"const": name}}},
                      "then": {"properties": props, "required": required, "additionalProperties": False}})
    return {"type": "object", "required": ["provider"], "properties": {"provider": {"enum": sorted(PRESETS)}},
            "allOf": rules}


def flow_schema() -> dict[str, Any]:
    """The whole schema: a flow file, its trigger, every step type and verification preset."""
    top = _object(FLOW_FIELDS)
    top["patternProperties"] = {"^x-": {"description": "Ignored: a place for YAML anchors (&name) to merge with <<."}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Hookline flow",
        "description": "A Hookline flow file (flows/<id>.yaml). Generated by `python -m engine.schema`.",
        **top,
        "$defs": {
            "steps": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}},
            "step": {"anyOf": [{"$ref": f"#/$defs/step_{name}"} for name in sorted(REGISTRY)]},
            **{f"step_{name}": _step_type(name) for name in sorted(REGISTRY)},
            "trigger": _object(TRIGGER_FIELDS),
            "defaults": {"type": "object", "additionalProperties": False, "properties": {
                name: {**_object(REGISTRY[name].fields), "required": []} for name in sorted(REGISTRY)
                if REGISTRY[name].shape == "fields"}},
            "verify": _verify(),
        },
    }


def render() -> str:
    return json.dumps(flow_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m engine.schema [--check] [FILE]``: write (or check) the checked-in schema."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    files = [a for a in args if a != "--check"]
    path = Path(files[0]) if files else PATH
    text = render()
    if check:
        stale = not path.exists() or path.read_text(encoding="utf-8") != text
        print(f"{path}: {'stale: run python -m engine.schema' if stale else 'up to date'}")
        return 1 if stale else 0
    path.write_text(text, encoding="utf-8")
    print(f"{path}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
