"""The import rule of engine/__init__.py: the core never imports flask, huey or sqlalchemy."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT

CORE = ["engine.model", "engine.errors", "engine.config", "engine.envrefs", "engine.templating", "engine.loader",
        "engine.catalog", "engine.steps", "engine.runner", "engine.verify", "engine.events", "engine.flowtest",
        "engine.connections", "engine.connections.load", "engine.connections.runtime", "engine.connections.overview",
        "engine.units", "engine.jinjaenv", "engine.placeholder", "engine.redaction", "engine.presets", "engine.schema"]


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
