"""The generated part of docs/flows.md: step types, verification presets and settings, from the code.

Each step type declares its fields once (``engine.steps``), the verification presets live in
``engine.verify`` and the settings carry their help text (``engine.config``). This module turns
them into Markdown, so the reference cannot drift from what the loader accepts, as sqlite-utils'
cog-generated CLI reference does. ``python -m engine.reference`` rewrites the section of
``docs/flows.md`` between the markers below; ``--check`` only says whether it is stale.
``tests/test_docs.py`` fails when it is.

Only the one-line descriptions of the verification presets are written here, because
``engine.verify`` keeps its presets as code rather than as a spec; everything else is read from
the specs, and the examples are parsed with ``engine.verify.parse_verify`` by the tests.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.config import settings_help
from engine.steps import REGISTRY, Field, StepType
from engine.verify import PROVIDERS, hint, parse_verify

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
}


@dataclass(frozen=True)
class Preset:
    """What the reference says about one ``trigger.verify`` provider."""

    summary: str
    keys: tuple[tuple[str, str], ...]  # (key, what it takes), besides `provider`
    example: dict[str, Any]


_SECRET = ("secret", "the signing secret: a string, or a list of strings while rotating (any may match); usually `${VAR}`")
_TOLERANCE = ("tolerance", "how far the signed timestamp may be from now, either way: seconds or `30s`/`5m`/`1h`; default 300")

PRESETS: dict[str, Preset] = {
    "basic": Preset(
        "HTTP basic auth (`Authorization: Basic ...`), for senders that only support a username and password.",
        (("username", "the expected username; `${VAR}` allowed"), ("password", "the expected password; `${VAR}` allowed")),
        {"provider": "basic", "username": "${HOOK_USER}", "password": "${HOOK_PASSWORD}"},
    ),
    "github": Preset(
        "GitHub webhooks: HMAC-SHA256 of the raw body. Set the same secret on the GitHub webhook.",
        (_SECRET,),
        {"provider": "github", "secret": "${GITHUB_WEBHOOK_SECRET}"},
    ),
    "hmac": Preset(
        "Any provider that sends an HMAC of the body (optionally `<timestamp>.<body>`) in a header of its own.",
        (
            ("header", "the header carrying the signature (required)"),
            ("algorithm", "`sha1`, `sha256` or `sha512`; default `sha256`"),
            ("encoding", "`hex` or `base64`; default `hex`"),
            ("prefix", "text before the signature in the header, e.g. `sha256=`; default none"),
            ("timestamp_header", "a header with a Unix timestamp; then `<timestamp>.<body>` is signed and checked for age"),
            ("tolerance", "only with `timestamp_header`; as for stripe"),
            _SECRET,
        ),
        {"provider": "hmac", "header": "X-Signature", "prefix": "sha256=", "timestamp_header": "X-Timestamp",
         "secret": "${PARTNER_WEBHOOK_SECRET}"},
    ),
    "shopify": Preset(
        "Shopify webhooks: base64 HMAC-SHA256 of the raw body. The secret is the app's client secret "
        "(or the one shown under Settings > Notifications > Webhooks).",
        (_SECRET,),
        {"provider": "shopify", "secret": "${SHOPIFY_WEBHOOK_SECRET}"},
    ),
    "slack": Preset(
        "Slack Events API, slash commands and interactivity, signed with the app's signing secret. "
        "Slack's `url_verification` challenge is answered without starting a run.",
        (_SECRET, _TOLERANCE),
        {"provider": "slack", "secret": "${SLACK_SIGNING_SECRET}"},
    ),
    "standard-webhooks": Preset(
        "The Standard Webhooks scheme (Svix and the many providers built on it). The secret is `whsec_` "
        "followed by base64, as the provider shows it.",
        (_SECRET, _TOLERANCE),
        {"provider": "standard-webhooks", "secret": "${SVIX_WEBHOOK_SECRET}"},
    ),
    "stripe": Preset(
        "Stripe webhook endpoints: `t=<timestamp>,v1=<HMAC-SHA256 of \"<timestamp>.<body>\">`. "
        "The secret is the endpoint's signing secret (`whsec_...`).",
        (_SECRET, _TOLERANCE),
        {"provider": "stripe", "secret": "${STRIPE_WEBHOOK_SECRET}", "tolerance": "5m"},
    ),
    "token": Preset(
        "A static shared token in a header or a query parameter, for senders that cannot sign. "
        "The header or parameter is redacted before the request is stored.",
        (("header", "the header carrying the token (give `header` or `query`, not both)"),
         ("query", "the query parameter carrying the token"), ("secret", "the expected token; a list while rotating")),
        {"provider": "token", "header": "X-Webhook-Token", "secret": "${PARTNER_TOKEN}"},
    ),
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
        if f.kind == "fields":
            rows.extend(_field_rows(f.fields, f"{name}."))
    return rows


def step_fields(step_type: StepType) -> list[str]:
    """Dotted names of every field of a step type, nested ones included (``retry.max_attempts``)."""

    def walk(fields: Sequence[Field], prefix: str) -> list[str]:
        out: list[str] = []
        for f in fields:
            out.append(prefix + f.name)
            out.extend(walk(f.fields, f"{prefix}{f.name}."))
        return out

    return walk(step_type.fields, "")


_SHAPES = {
    "expression": "Its value is one bare Jinja expression (no `{{ }}` needed); it is compiled when the flow loads.",
    "value": "Its value is any YAML value (usually a mapping) following the value rules; it is rendered as a whole.",
}


def step_reference() -> str:
    """One subsection per registered step type: help, shape or field table, and the spec's example."""
    out = ["### Step types", ""]
    out.append("Every step also takes `id` (required, unique; a letter or `_`, then letters, digits and `_`), "
               "`when` (a bare expression; false skips the step) and `description` (or `name`).")
    for name in sorted(REGISTRY):
        st = REGISTRY[name]
        out += ["", f"#### `{name}`", "", st.help, ""]
        if st.shape in _SHAPES:
            out.append(_SHAPES[st.shape])
        else:
            out += [
                "| Key | Takes | Default | Templated | What it does | Example |",
                "|---|---|---|---|---|---|",
                *_field_rows(st.fields),
            ]
        if st.example:
            out += ["", "```yaml", st.example, "```"]
    return "\n".join(out)


def verify_reference() -> str:
    """One subsection per provider in ``engine.verify.PROVIDERS``: what it checks, its keys, an example."""
    out = ["### Verification presets", "",
           "`trigger.verify.provider` is one of: " + ", ".join(f"`{p}`" for p in PROVIDERS) + ". "
           "A request that does not verify is answered 401 and starts nothing; a secret whose variable is "
           "not set is answered 503, so the provider retries once it is."]
    for provider in PROVIDERS:
        preset = PRESETS.get(provider)
        out += ["", f"#### `{provider}`", ""]
        if preset is None:
            out.append("(not described yet)")
            continue
        config, _problems = parse_verify(preset.example)
        out.append(preset.summary + (f" Checks: {hint(config)}." if config is not None else ""))
        out += ["", "| Key | Takes |", "|---|---|"]
        out += [f"| `{key}` | {_cell(text)} |" for key, text in preset.keys]
        example = yaml.safe_dump({"trigger": {"verify": preset.example}}, sort_keys=False, default_flow_style=False)
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
