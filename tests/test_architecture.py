"""The import rules: the core never imports flask, huey or sqlalchemy (engine/__init__.py), and the
arrows run core <- store/service <- web <- engine.app: only engine/app imports web or huey."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

CORE = ["engine.model", "engine.errors", "engine.config", "engine.envrefs", "engine.templating", "engine.loader",
        "engine.catalog", "engine.steps", "engine.runner", "engine.events", "engine.flowtest",
        "engine.connections", "engine.connections.load", "engine.connections.runtime", "engine.connections.overview",
        "engine.units", "engine.jinjaenv", "engine.placeholder", "engine.redaction", "engine.presets", "engine.schema",
        "engine.alerts", "engine.versions"]


def test_core_is_free_of_frameworks() -> None:
    code = (f"import sys; import {', '.join(CORE)}; "
            "print(sorted(m for m in ('flask', 'huey', 'sqlalchemy', 'werkzeug') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_surface() -> None:
    import engine

    assert set(engine.__all__) >= {"load_flow", "run_flow", "Flow", "Event", "RunStatus", "StepStatus", "EngineError"}
    for name in engine.__all__:
        assert hasattr(engine, name), name


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (lazy imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _offences(package: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if package == "engine" and path.is_relative_to(ROOT / "engine" / "app"):
            continue
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)} imports {name}")
    return out


def test_only_engine_app_imports_web_or_huey() -> None:
    assert _offences("engine", ("web", "huey", "flask", "werkzeug", "engine.app")) == []


def test_web_does_not_import_the_process_adapters() -> None:
    assert _offences("web", ("huey", "engine.app")) == []


def test_the_rule_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from engine.app import tasks\n    import huey.api\n")
    assert _imports(module) >= {"engine.app", "engine.app.tasks", "huey.api"}
