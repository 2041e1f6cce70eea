"""YAML syntax errors name the line a person must fix, numbered as an editor shows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import FlowInvalid
from engine.loader import load_flow

CASES = {
    "tab indentation": ("id: a\nsteps:\n  - id: x\n    transform:\n\t  a: 1\n", 5),
    "unclosed double quote": ('id: a\nname: "unclosed\nsteps:\n  - id: x\n    transform: {a: 1}\n', 2),
    "unclosed single quote in a flow mapping": ("id: a\nsteps:\n  - id: x\n    transform: {a: 'b}\n", 4),
    "unclosed quote on the last line, no newline": ("id: a\nname: 'x", 2),
    "unclosed bracket": ("id: a\nsteps: [\n  {id: x, transform: {a: 1}}\n", 2),
    "key without its colon": ("id: a\nname x\nsteps: []\n", 2),
    "nested key without its colon": ("id: a\nsteps:\n  - id: x\n    transform\n      a: 1\n", 4),
    "mapping value inside a value": ("id: a\nsteps:\n  - id: x\n    transform: a: b\n", 4),
    "list item inside a mapping": ("id: a\nname: x\n- y\nsteps: []\n", 3),
    "bad indentation": ("id: a\nsteps:\n  - id: x\n   transform: {}\n", 4),
    "undefined alias": ("id: a\nsteps: *nope\n", 2),
    "after CRLF lines": ("id: a\r\nname: x\r\n  bad: y\r\nsteps: []\r\n", 3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_reported_line_is_the_one_to_fix(name: str) -> None:
    text, line = CASES[name]
    with pytest.raises(FlowInvalid) as exc:
        load_flow(text, "f.yaml")
    [err] = exc.value.errors
    assert err.line == line and str(err).startswith(f"f.yaml:{line}: YAML syntax error: "), str(err)
    assert line <= len(text.splitlines())


def test_validate_prints_the_exact_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from engine.app.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text('id: bad\nname: "oops\nsteps:\n  - id: x\n    transform: {a: 1}\n')
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 1
    assert result.output.startswith(f"{bad}:2: YAML syntax error: "), result.output
