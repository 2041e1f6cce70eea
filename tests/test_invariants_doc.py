"""docs/invariants.md states every promise the code and docs cite, each with tests that exist."""

from __future__ import annotations

import re

from tests.support import ROOT

DOC = (ROOT / "docs" / "invariants.md").read_text(encoding="utf-8")
DEFINED = dict(re.findall(r"^### (I\d+) (.+)$", DOC, re.MULTILINE))


def _sections() -> dict[str, str]:
    parts = re.split(r"^### (I\d+) .+$", DOC, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_cited_invariant_is_defined() -> None:
    cited: dict[str, str] = {}
    for folder in ("engine", "web", "docs", "tests", "bench"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".py", ".md", ".html") or "results" in path.parts:
                continue
            for name in re.findall(r"\bI(\d{1,2})\b", path.read_text(encoding="utf-8", errors="replace")):
                cited.setdefault(f"I{name}", str(path.relative_to(ROOT)))
    undefined = {k: v for k, v in cited.items() if k not in DEFINED}
    assert not undefined, f"cited but not defined in docs/invariants.md: {undefined}"
    assert set(DEFINED) == {f"I{n}" for n in range(1, 12)}


def test_every_invariant_names_tests_that_exist() -> None:
    for name, text in _sections().items():
        tests = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
        assert tests, f"{name} names no test"
        for file, func in tests:
            source = (ROOT / file).read_text(encoding="utf-8")
            assert re.search(rf"^def {func}\(", source, re.MULTILINE), f"{name}: {file}::{func} does not exist"
