"""The generated part of docs/flows.md: step types, verification presets and settings, from the code.

Each step type declares its fields once (``engine.steps``), so does each verification preset
(``engine.presets``), and the settings carry their help text (``engine.config``). This module turns
them into Markdown, so the reference cannot drift from what the loader accepts, as sqlite-utils'
cog-generated CLI reference does. ``python -m engine.reference`` rewrites the section of
``docs/flows.md`` between the markers below; ``--check`` only says whether it is stale.
``tests/test_docs.py`` fails when it is.

The verification presets are read from ``engine.presets.REGISTRY``: each preset's summary, fields,
example and the hint its example produces.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from engine.config import settings_help
from engine.presets import PROVIDERS, hint, parse_verify
from engine.presets import REGISTRY as PRESETS
from engine.presets import Field as PresetField
from engine.steps import REGISTRY, Field, StepType

START = "<!-- reference:start -->"
END = "<!-- reference:end -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "flows.md"

KINDS: dict[str, str] = {
    "str": "text",
    "int": "positive whole number",
    "bool": "`true` / `false`",
    "duration": "duration: `500ms`, `10s`, `2m`, `1h`, `1d` or a number of seconds",
    "template": "any value; templates, `$` JSONPaths and `${VAR}` inside",
    "enum": "one of the listed words (any case)",
    "statuses": "list of statuses: `200`, `\"2xx\"`, `\"400-404\"`",
    "hosts": "list of host names; `*` wildcards allowed",
    "fields": "mapping of the keys below",
    "expression": "a bare expression (no `{{ }}` needed)",
    "steps": "a list of steps",
    "list": "a list of mappings of the keys below",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def format_default(f: Field) -> str:
    """The default as a flow author would write it; ``—`` when there is none."""
    value = f.default
    if value is None:
        return "—"
    if f.kind == "duration" and isinstance(value, int | float):
        return f"`{_duration(float(value))}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    return f"`{value}`"


def _kind(f: Field) -> str:
    if f.kind == "enum":
        return "one of " + ", ".join(f"`{c}`" for c in f.choices)
    return KINDS.get(f.kind, f.kind)


def _field_rows(fields: Sequence[Field], prefix: str = "") -> list[str]:
    rows: list[str] = []
    for f in fields:
        name = f"{prefix}{f.name}"
        default = "**required**" if f.required else format_default(f)
        templated = "yes" if f.templated else "no"
        example = f"`{f.example}`" if f.example else ""
        rows.append(f"| `{name}` | {_cell(_kind(f))} | {default} | {templated} | {_cell(f.help)} | {_cell(example)} |")
        if f.kind in ("fields", "list"):
            rows.extend(_field_rows(f.fields, f"{name}[]." if f.kind == "list" else f"{name}."))
    return rows


def step_fields(step_type: StepType) -> list[str]:
    """Dotted names of every field of a step type, nested ones included (``retry.max_attempts``)."""

    def walk(fields: Sequence[Field], prefix: str) -> list[str]:
        out: list[str] = []
        for f in fields:
            out.append(prefix + f.name)
            out.extend(walk(f.fields, f"{prefix}{f.name}{'[]' if f.kind == 'list' else ''}."))
        return out

    return walk((*step_type.fields, *step_type.options), "")


_SHAPES = {
    "expression": "Its value is one bare Jinja expression (no `{{ }}` needed); it is compiled when the flow loads.",
    "value": "Its value is any YAML value (usually a mapping) following the value rules; it is rendered as a whole.",
}


def step_reference() -> str:
    """One subsection per registered step type: help, shape or field table, and the spec's example."""
    out = ["### Step types", ""]
    out.append("Every step also takes `id` (required, unique in the whole flow, nested steps included; a letter or `_`, "
               "then letters, digits and `_`), `when` (a bare expression; false skips the step), `on_error` (`fail`, "
               "the default, or `continue`: a failure for good is kept in `steps.<id>.error` and the run goes on) "
               "and `description` (or `name`).")
    for name in sorted(REGISTRY):
        st = REGISTRY[name]
        out += ["", f"#### `{name}`", "", st.help, ""]
        if st.shape in _SHAPES:
            out.append(_SHAPES[st.shape])
            if st.options:
                out += ["", f"Beside `{name}:`, the step takes:", "",
                        "| Key | Takes | Default | Templated | What it does | Example |",
                        "|---|---|---|---|---|---|", *_field_rows(st.options)]
        else:
            out += [
                "| Key | Takes | Default | Templated | What it does | Example |",
                "|---|---|---|---|---|---|",
                *_field_rows(st.fields),
            ]
        if st.example:
            out += ["", "```yaml", st.example, "```"]
    return "\n".join(out)


_PRESET_KINDS = {
    "secret": "text, or a list of texts while rotating",
    "str": "text",
    "text": "text (may be empty)",
    "header": "an HTTP header name",
    "enum": "one of the listed words (any case)",
    "duration": "duration: `500ms`, `30s`, `5m`, `1h`, `1d` or a number of seconds",
    "url": "an `https://` URL, `${VAR}` allowed",
}


def _preset_row(f: PresetField) -> str:
    takes = "one of " + ", ".join(f"`{c}`" for c in f.choices) if f.kind == "enum" else _PRESET_KINDS[f.kind]
    if f.required:
        default = "**required**"
    elif f.default is None or f.default == "":
        default = "—"
    elif f.kind == "duration":
        default = f"`{_duration(float(f.default))}`"
    else:
        default = f"`{f.default}`"
    secret = "yes" if f.secret else "no"
    return f"| `{f.name}` | {_cell(takes)} | {default} | {secret} | {_cell(f.help)} |"


def verify_reference() -> str:
    """One subsection per preset in ``engine.presets.REGISTRY``: what it checks, its keys, an example."""
    out = ["### Verification presets", "",
           "`trigger.verify.provider` is one of: " + ", ".join(f"`{p}`" for p in PROVIDERS) + ". "
           "A request that does not verify is answered 401 and starts nothing; a secret whose variable is "
           "not set is answered 503, so the provider retries once it is. Values marked secret are never "
           "stored: when the provider sends them in a header or query parameter, that value is redacted."]
    for provider in PROVIDERS:
        preset = PRESETS[provider]
        config, _problems = parse_verify(preset.example)
        out += ["", f"#### `{provider}`", ""]
        out.append(preset.summary + (f" Checks: {hint(config)}." if config is not None else ""))
        out += ["", "| Key | Takes | Default | Secret | What it does |", "|---|---|---|---|---|"]
        out += [_preset_row(f) for f in preset.fields]
        example = yaml.safe_dump({"trigger": {"verify": dict(preset.example)}}, sort_keys=False,
                                 default_flow_style=False)
        out += ["", "```yaml", example.rstrip("\n"), "```"]
    return "\n".join(out)


def _setting_default(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return "`" + ",".join(value) + "`" if value else "(empty)"
    if value == "":
        return "(empty)"
    return f"`{value}`"


def settings_reference() -> str:
    """The ``HOOKLINE_*`` environment variables from ``engine.config.settings_help()``."""
    out = ["### Settings", "",
           "Deployment-wide settings are `HOOKLINE_*` environment variables (lists are comma-separated, booleans "
           "are false for `0`, `false`, `no`, `off` or empty).", "",
           "| Variable | Default | What it does |", "|---|---|---|"]
    out += [f"| `{name}` | {_setting_default(default)} | {_cell(help)} |" for name, default, help in settings_help()]
    return "\n".join(out)


def generate() -> str:
    """The whole generated section, without the markers."""
    note = "<!-- Generated by `python -m engine.reference` from the code; edit the specs, not this section. -->"
    return "\n\n".join([note, step_reference(), verify_reference(), settings_reference()]) + "\n"


def replace_section(text: str, generated: str) -> str:
    """``text`` with everything between the markers replaced; ValueError when the markers are missing."""
    start = text.find(START)
    end = text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"expected {START} ... {END} in the document")
    return text[: start + len(START)] + "\n" + generated + text[end:]


def current_section(text: str) -> str:
    """What is between the markers now (as :func:`replace_section` writes it)."""
    start = text.find(START)
    end = text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"expected {START} ... {END} in the document")
    return text[start + len(START) + 1 : end]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m engine.reference [--check] [path]``: rewrite (or check) the generated section."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    path = Path(paths[0]) if paths else DOC
    text = path.read_text(encoding="utf-8")
    updated = replace_section(text, generate())
    if check:
        if updated != text:
            print(f"{path}: the generated reference is stale; run python -m engine.reference", file=sys.stderr)
            return 1
        print(f"{path}: up to date")
        return 0
    if updated != text:
        path.write_text(updated, encoding="utf-8")
        print(f"{path}: reference rewritten")
    else:
        print(f"{path}: already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
