"""Step types: each declares its spec once (fields, help, example) next to its ``execute``.

The loader validates step configs from these specs and ``docs/flows.md``'s step reference is
generated from them. Built-in steps register through :func:`register`, the same door a custom
step type would use.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine.model import Step
from engine.templating import RenderContext


@dataclass(frozen=True)
class Field:
    """One key of a step's config."""

    name: str
    kind: str  # str | int | bool | duration | template | enum | statuses | hosts | fields
    help: str
    required: bool = False
    default: Any = None
    example: str = ""
    choices: tuple[str, ...] = ()
    fields: tuple[Field, ...] = ()  # for kind "fields"

    @property
    def templated(self) -> bool:
        return self.kind == "template"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; ``max_attempts`` counts the first attempt."""

    max_attempts: int = 3
    backoff: str = "exponential"  # exponential | fixed
    initial: float = 1.0
    max_delay: float = 300.0

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Delay before attempt ``attempt + 1``: uniform in [0, min(max_delay, initial * 2**(attempt-1))]."""
        if self.backoff == "fixed":
            return min(self.initial, self.max_delay)
        ceiling = min(self.max_delay, self.initial * (2 ** max(0, attempt - 1)))
        return float(ceiling * rng())


@dataclass(frozen=True)
class RunOptions:
    """Deployment-wide knobs the runner hands to steps."""

    default_timeout: float = 10.0
    allow_hosts: tuple[str, ...] = ()
    redact_headers: tuple[str, ...] = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key")
    max_recorded_body: int = 256 * 1024
    user_agent: str = "Hookline/0.1"


@dataclass
class StepContext:
    """Everything one step attempt may use; built by the runner."""

    render: RenderContext
    step: Step
    attempt: int
    idempotency_key: str
    http: httpx.Client | None = None
    dry_run: bool = False
    stub: Any = None  # a stubbed response for `hookline test` (http steps)
    has_stub: bool = False
    options: RunOptions = field(default_factory=RunOptions)


@dataclass
class Outcome:
    output: Any = None
    input: Any = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    stop: bool = False  # a filter said no: the run ends as filtered


@dataclass(frozen=True)
class StepType:
    name: str
    help: str
    shape: str  # "expression": the value is a bare expression; "value": any templated value; "fields": a mapping
    build: Callable[[Any], Any]  # parsed value (Expr, or dict of parsed fields) -> config
    execute: Callable[[StepContext], Outcome]
    fields: tuple[Field, ...] = ()
    example: str = ""
    side_effects: bool = False  # recorded as started before it runs, so a crash is seen (invariant I4)
    destination: Callable[[StepContext], str | None] | None = None  # host it calls, for destination protection
    outage: Callable[[Exception], bool] | None = None  # which failures count against the destination


REGISTRY: dict[str, StepType] = {}


def register(step_type: StepType) -> StepType:
    REGISTRY[step_type.name] = step_type
    return step_type


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float:
    """``10s``, ``2m``, ``500ms``, ``1h`` or a number of seconds; raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 10s, 2m or 500ms")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration like 10s, 2m or 500ms, got {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


from engine.steps import filter as _filter  # noqa: E402,F401  registration side effect
from engine.steps import http as _http  # noqa: E402,F401
from engine.steps import transform as _transform  # noqa: E402,F401
