"""``hookline validate`` fails on flow files that claim one id, one line per clash naming both files at
their ``id:`` lines, as the catalog would refuse the second (whatever else is wrong with it)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from engine.app.cli import main

STEPS = "steps:\n  - id: a\n    transform: {x: 1}\n"


def validate(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["validate", *args])
    return result.exit_code, result.output.splitlines()


def test_a_clash_names_both_files_and_their_id_lines(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("# the first\nid: orders\n" + STEPS)
    b.write_text("# copied\n\n\nid: orders\n" + STEPS)
    code, lines = validate(str(tmp_path))
    assert code == 1
    clash = [line for line in lines if "also the id of" in line]
    assert clash == [f"{b}:4: id: flow id 'orders' is also the id of {a}:2; each flow file needs its own id"]
    assert not any(line.startswith(f"{b}: ok") for line in lines)
    assert f"{a}: ok (orders, 1 steps)" in lines


def test_ids_from_file_names_and_flow_style_ids_clash_too(tmp_path: Path) -> None:
    (tmp_path / "orders.yaml").write_text(STEPS)  # id from the file name
    (tmp_path / "orders.yml").write_text(STEPS)
    (tmp_path / "z.yaml").write_text("{steps: [{id: a, transform: {x: 1}}],\n id: orders}\n")
    code, lines = validate(str(tmp_path))
    assert code == 1
    clash = sorted(line for line in lines if "also the id of" in line)
    assert clash == [
        f"{tmp_path / 'orders.yml'}:1: id: flow id 'orders' is also the id of {tmp_path / 'orders.yaml'}:1; "
        "each flow file needs its own id",
        f"{tmp_path / 'z.yaml'}:2: id: flow id 'orders' is also the id of {tmp_path / 'orders.yaml'}:1; "
        "each flow file needs its own id",
    ]


def test_a_clash_is_reported_even_when_the_file_has_other_problems(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: orders\n" + STEPS)
    (tmp_path / "b.yaml").write_text("id: orders\nsteps:\n  - id: a\n    http: {url: 'https://x.test', connection: nope}\n")
    code, lines = validate(str(tmp_path))
    assert code == 1
    assert any(line.startswith(f"{tmp_path / 'b.yaml'}:1: id: flow id 'orders' is also the id of") for line in lines)


def test_the_same_file_named_twice_is_no_clash(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: orders\n" + STEPS)
    code, lines = validate(str(tmp_path), str(tmp_path / "a.yaml"))
    assert code == 0, lines
    assert lines == [f"{tmp_path / 'a.yaml'}: ok (orders, 1 steps)"]


def test_flows_in_different_directories_are_served_apart_and_do_not_clash(tmp_path: Path) -> None:
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "a.yaml").write_text("id: orders\n" + STEPS)
    code, lines = validate(str(tmp_path / "one"), str(tmp_path / "two"))
    assert code == 0, lines


def test_the_catalog_shows_the_clash_at_the_id_line_too(tmp_path: Path) -> None:
    from engine.catalog import FlowCatalog

    (tmp_path / "a.yaml").write_text("id: orders\n" + STEPS)
    (tmp_path / "b.yaml").write_text("# copied\n\n\nid: orders\n" + STEPS)
    broken = [f for f in FlowCatalog(str(tmp_path)).all() if f.path.endswith("b.yaml")]
    assert [(e.line, e.path) for e in broken[0].errors] == [(4, "id")]
