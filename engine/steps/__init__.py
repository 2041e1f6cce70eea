"""Step types: each declares its spec once (fields, help, example) next to its ``execute``.

The loader validates step configs from these specs and ``docs/flows.md``'s step reference is
generated from them. A step type also declares what the runner needs to know about it: whether it
has side effects (recorded as started, resumed from its kept result), its retry policy, timeout and
destination, and, for containers (foreach, switch), its child step lists. The runner walks that
tree and knows no step type by name.

The built-in step types below register through :func:`register`, the same door a custom step type
uses: an installed package's ``hookline.steps`` entry point (engine.plugins) is imported right after
them, and its module calls ``register``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from engine.model import Step
from engine.templating import Expr, RenderContext
from engine.units import parse_duration as parse_duration  # one grammar for durations: engine.units

if TYPE_CHECKING:
    from engine.config import Settings
    from engine.connections.runtime import ConnectionRuntime


@dataclass(frozen=True)
class Field:
    """One key of a step's config."""

    name: str
    kind: str  # str | int | bool | duration | template | expression | enum | statuses | hosts | fields | steps | list
    help: str
    required: bool = False
    default: Any = None
    example: str = ""
    choices: tuple[str, ...] = ()
    fields: tuple[Field, ...] = ()  # for kinds "fields" and "list" (a list of such mappings)

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
    public_url: str = ""  # where operators open the UI, for links handed to on_failure (`error.run_url`)
    connections: ConnectionRuntime | None = None  # connections.yaml, for http steps' `connection:`

    @classmethod
    def from_settings(cls, settings: Settings, connections: ConnectionRuntime | None = None) -> RunOptions:
        """The options of this deployment, the one place that maps settings onto them (service, ``hookline run``)."""
        return cls(
            default_timeout=settings.http_timeout_s,
            allow_hosts=settings.allow_hosts,
            redact_headers=tuple(h.lower() for h in settings.redact_headers),
            max_recorded_body=settings.max_stored_body,
            user_agent=settings.user_agent,
            public_url=settings.public_url.rstrip("/"),
            connections=connections,
        )


class Blocks(Protocol):
    """What a container step may ask of the runner: run child steps, inline or once per item.

    Both raise the runner's own halt signal when the run must stop (a failure, a wait, a filter);
    a container lets it pass.
    """

    def run(self, steps: Sequence[Step], label: str) -> Any:
        """Run ``steps`` in the container's scope under ``<path>.<label>.``; returns the last output."""

    def skip(self, steps: Sequence[Step]) -> None:
        """Steps of branches not taken read as null (``steps.<id>`` after a switch)."""

    def each(self, steps: Sequence[Step], items: Sequence[tuple[str, Mapping[str, Any]]], concurrency: int,
             output: Expr | None) -> list[Any]:
        """Run ``steps`` once per (key, variables) item, each in its own scope under ``<path>[<key>].``;
        returns each item's ``output`` (or its last step's output), in item order."""

    def context(self, variables: Mapping[str, Any]) -> RenderContext:
        """A render context of the container's scope plus ``variables`` (e.g. ``item`` for a key)."""


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
    path: str = ""  # the step's identity in this run: `notify`, `lines[3].decrement`
    blocks: Blocks | None = None  # for containers


@dataclass
class Outcome:
    output: Any = None
    input: Any = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    stop: bool = False  # a filter said no: the run ends as filtered


@dataclass(frozen=True)
class Block:
    """A container's child step list. ``scoped``: its ids are local (a foreach item's steps are read as
    ``steps.<foreach id>`` after it); otherwise they are visible after the container (a switch case)."""

    label: str
    steps: tuple[Step, ...]
    scoped: bool = False


def _none(_config: Any) -> Any:
    return None


@dataclass(frozen=True)
class StepType:
    name: str
    help: str
    shape: str  # "expression": the value is a bare expression; "value": any templated value; "fields": a mapping
    build: Callable[[Any], Any]  # parsed value (Expr, or dict of parsed fields; with `options`, {"value": ..., **options})
    execute: Callable[[StepContext], Outcome]
    fields: tuple[Field, ...] = ()
    example: str = ""
    side_effects: bool = False  # recorded as started before it runs, so a crash is seen (invariant I4)
    destination: Callable[[StepContext], str | None] | None = None  # origin it calls, for destination protection
    outage: Callable[[Exception], bool] | None = None  # which failures count against the destination
    options: tuple[Field, ...] = ()  # keys beside the type's own key in the step (foreach's `key`, `steps`...)
    children: Callable[[Any], tuple[Block, ...]] = lambda _config: ()
    retry: Callable[[Any], RetryPolicy | None] = _none  # the step's retry policy, from its config
    timeout: Callable[[Any], float | None] = _none  # how long one attempt may take (the lease covers it)
    limits: Callable[[Any], Mapping[str, Any] | None] = _none  # destination limits the step overrides


REGISTRY: dict[str, StepType] = {}


def register(step_type: StepType) -> StepType:
    """Add a step type; ValueError for a name taken (a plugin cannot replace a built-in behind its back)."""
    if step_type.name in REGISTRY:
        raise ValueError(f"step type {step_type.name} is registered twice")
    REGISTRY[step_type.name] = step_type
    return step_type


def walk(steps: Sequence[Step]) -> Iterator[Step]:
    """Every step of a step list, containers' children included, in the order they are declared."""
    for step in steps:
        yield step
        if step.config is not None:
            for block in REGISTRY[step.type].children(step.config):
                yield from walk(block.steps)


from engine import plugins as _plugins  # noqa: E402
from engine.steps import fail as _fail  # noqa: E402,F401  registration side effect
from engine.steps import filter as _filter  # noqa: E402,F401
from engine.steps import foreach as _foreach  # noqa: E402,F401
from engine.steps import http as _http  # noqa: E402,F401
from engine.steps import switch as _switch  # noqa: E402,F401
from engine.steps import transform as _transform  # noqa: E402,F401

_plugins.load(_plugins.STEPS)  # after the built-ins: installed step types (entry points), the same door
