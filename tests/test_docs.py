"""docs/flows.md stays true: its generated reference is fresh, and nothing a user can write is undocumented.

As Datasette's test_docs fails when a setting is undocumented, these fail when a step field, setting,
verification preset, trigger key, CLI command, status or template filter is missing from the docs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jinja2 import Environment

from engine import reference
from engine.app.cli import main as cli
from engine.config import settings_help
from engine.flowtest import FIXTURE_KEYS, run_fixture
from engine.loader import FLOW_KEYS, STEP_COMMON, TRIGGER_KEYS, load_flow_file
from engine.model import RunStatus, StepStatus
from engine.presets import PROVIDERS, parse_verify
from engine.presets import REGISTRY as PRESETS
from engine.steps import REGISTRY
from engine.templating import ENV

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "flows.md"
TEXT = DOC.read_text(encoding="utf-8")
GENERATED = reference.current_section(TEXT)
WRITTEN = TEXT.replace(GENERATED, "")  # the hand-written part


def _section(text: str, heading: str) -> str:
    """The text under a Markdown heading, up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n")
    out: list[str] = []
    fenced = False
    for line in text[start + len(heading) + 1 :].splitlines():
        fenced ^= line.startswith("```")
        if not fenced and re.match(rf"#{{1,{level}}} ", line):  # `# comment` lines inside code blocks are not headings
            break
        out.append(line)
    return "\n".join(out)


def test_generated_reference_is_fresh() -> None:
    assert GENERATED == reference.generate(), "docs/flows.md is stale: run `python -m engine.reference`"


def test_check_mode_detects_and_rewrite_fixes_a_stale_doc(tmp_path: Path) -> None:
    stale = tmp_path / "flows.md"
    stale.write_text(reference.replace_section(TEXT, "old\n"), encoding="utf-8")
    cmd = [sys.executable, "-m", "engine.reference"]
    assert subprocess.run([*cmd, "--check", str(stale)], cwd=ROOT, capture_output=True).returncode == 1
    assert subprocess.run([*cmd, str(stale)], cwd=ROOT, capture_output=True).returncode == 0
    assert stale.read_text(encoding="utf-8") == TEXT
    assert subprocess.run([*cmd, "--check", str(stale)], cwd=ROOT, capture_output=True).returncode == 0


def test_markers_are_required() -> None:
    with pytest.raises(ValueError, match="reference:start"):
        reference.replace_section("# no markers\n", "x")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_step_type_and_field_is_documented(name: str) -> None:
    step_type = REGISTRY[name]
    assert step_type.help and step_type.example, f"step type {name} needs help and an example in its spec"
    section = _section(GENERATED, f"#### `{name}`")
    for field in step_type.fields:
        assert field.help, f"{name}.{field.name} has no help text"
        for nested in field.fields:
            assert nested.help, f"{name}.{field.name}.{nested.name} has no help text"
    for dotted in reference.step_fields(step_type):
        assert f"| `{dotted}` |" in section, f"{name}: field {dotted} is not in the reference"
    assert f"`{name}`" in WRITTEN, f"the guide never mentions the {name} step"


def test_every_setting_is_documented() -> None:
    section = _section(GENERATED, "### Settings")
    for env_var, _default, help_text in settings_help():
        assert help_text, f"{env_var} has no help text"
        assert f"| `{env_var}` |" in section, f"{env_var} is not documented"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_verification_preset_is_documented(provider: str) -> None:
    preset = PRESETS[provider]
    config, problems = parse_verify(preset.example)
    assert config is not None and not problems, problems
    section = _section(GENERATED, f"#### `{provider}`")
    assert f"provider: {provider}" in section
    for field in preset.fields:
        assert field.help, f"{provider}.{field.name} has no help text"
        assert f"| `{field.name}` |" in section, f"{provider}: key {field.name} is not in the reference"


@pytest.mark.parametrize("key", [*FLOW_KEYS, *(f"trigger.{k}" for k in TRIGGER_KEYS), *STEP_COMMON])
def test_every_flow_trigger_and_step_key_is_explained(key: str) -> None:
    assert f"`{key.split('.')[-1]}`" in WRITTEN, f"{key} is not explained in docs/flows.md"


def test_every_trigger_key_has_a_row() -> None:
    section = _section(WRITTEN, "## Trigger")
    for key in TRIGGER_KEYS:
        assert f"| `{key}` |" in section, key


def test_fixture_keys_are_documented() -> None:
    section = _section(WRITTEN, "## Testing flows")
    for key in FIXTURE_KEYS:
        assert f"`{key}`" in section, key


def test_every_cli_command_is_documented() -> None:
    section = _section(WRITTEN, "## Command line")
    names = []
    for name, command in cli.commands.items():
        sub = getattr(command, "commands", None)
        names += [f"{name} {s}" for s in sub] if sub else [name]
    for name in names:
        assert f"`hookline {name}" in section, f"hookline {name} is not documented"


def test_every_status_is_explained() -> None:
    section = _section(WRITTEN, "## Statuses")
    for status in [*RunStatus, *StepStatus]:
        assert f"| `{status.value}` |" in section, status


def test_hookline_template_filters_are_documented() -> None:
    section = _section(WRITTEN, "### Filters")
    ours = set(ENV.filters) - set(Environment().filters)
    assert ours, "expected Hookline's own filters"
    for name in ours:
        assert f"`{name}" in section, f"template filter {name} is not documented"


def test_yaml_examples_parse() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", TEXT, re.DOTALL)
    assert blocks
    for block in blocks:
        yaml.safe_load(block)


def test_the_fixture_example_passes(tmp_path: Path) -> None:
    """The fixture shown under "Testing flows" is a real, passing fixture of the Stripe flow."""
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", TEXT, re.DOTALL)
                 if b.startswith("# flows/tests/stripe_payment_sync/"))
    fixture = tmp_path / "example.yaml"
    fixture.write_text(block, encoding="utf-8")
    result = run_fixture(load_flow_file(ROOT / "flows" / "stripe_payment_sync.yaml"), fixture)
    assert result.passed, result.problems


def test_readme_links_the_guides() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/flows.md" in readme and "docs/deploy.md" in readme
    assert "make run" in readme and "make test" in readme


def test_readme_shows_the_stripe_flow_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)[0]
    assert block == (ROOT / "flows" / "stripe_payment_sync.yaml").read_text(encoding="utf-8")
