"""``hookline validate`` names flow files that share an id, at the line of the second one's ``id:``."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from engine.app.cli import main


def test_validate_reports_id_clashes_between_files_with_the_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: orders\nsteps:\n  - id: a\n    transform: {x: 1}\n")
    (tmp_path / "b.yaml").write_text("# copied from a.yaml\n\nid: orders\nsteps:\n  - id: b\n    transform: {x: 1}\n")
    (tmp_path / "c.yaml").write_text("id: other\nsteps:\n  - id: c\n    transform: {x: 1}\n")
    result = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{tmp_path / 'b.yaml'}:3: id: flow id 'orders' is also the id of {tmp_path / 'a.yaml'}:1; " \
           "each flow file needs its own id" in lines
    assert f"{tmp_path / 'c.yaml'}: ok (other, 1 steps)" in lines
    assert "1 problem(s) in 3 file(s)" in result.output
