"""Hookline's engine: flows in YAML, run step by step, recorded.

Import rule: the core modules (model, errors, config, envrefs, templating, loader, catalog, steps,
runner, verify, events, flowtest) never import flask, huey or sqlalchemy; tests/test_architecture.py
enforces it. The adapters are store (SQLAlchemy), service (use cases over the store), tasks (Huey)
and the web package (Flask).
"""

from engine.errors import EngineError, FlowError, FlowInvalid, StepError, TemplateError
from engine.loader import load_flow, load_flow_file
from engine.model import Event, Flow, Headers, RunResult, RunStatus, Step, StepResult, StepStatus
from engine.runner import run_flow

__all__ = [
    "EngineError",
    "Event",
    "Flow",
    "FlowError",
    "FlowInvalid",
    "Headers",
    "RunResult",
    "RunStatus",
    "Step",
    "StepError",
    "StepResult",
    "StepStatus",
    "TemplateError",
    "load_flow",
    "load_flow_file",
    "run_flow",
]
