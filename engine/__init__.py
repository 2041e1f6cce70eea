"""Hookline's engine: flows in YAML, run step by step, recorded.

Import rule: the core modules (model, errors, config, envrefs, units, templating, jinjaenv, placeholder,
loader, schema, catalog, steps, runner, redaction, presets, connections, events, flowtest, alerts,
versions) never import flask, huey or sqlalchemy; tests/test_architecture.py enforces it. The adapters are store (SQLAlchemy),
connection_store, service (use cases over the store), the web package (Flask), and engine.app (the
``hookline`` command, Huey tasks, reaper, servers, composition root): only engine.app imports web or huey.
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
