"""The nouns of Hookline as plain frozen dataclasses and enums; no I/O here."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.presets import VerifyConfig
    from engine.templating import Expr, KeyExpr


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # a retry is scheduled, or an earlier run of the same order key is unfinished
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FILTERED = "filtered"  # a filter step said no: not a failure

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.FILTERED})

class StepStatus(StrEnum):
    RUNNING = "running"  # started and not finished: if the worker died, the next claim marks it interrupted
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # this attempt failed; `retry_at` says whether another is scheduled
    SKIPPED = "skipped"  # its `when` was false
    FILTERED = "filtered"  # a filter step that ended the run

    @property
    def done(self) -> bool:
        """Done steps are never executed again within a run (invariant I5)."""
        return self in (StepStatus.SUCCEEDED, StepStatus.SKIPPED)


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only header mapping (templates see ``headers['X-GitHub-Event']``)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | list[tuple[str, str]] | None = None) -> None:
        pairs = items.items() if isinstance(items, Mapping) else (items or [])
        self._items: dict[str, str] = {str(k).lower(): str(v) for k, v in pairs}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True)
class Event:
    """An inbound webhook as the runner sees it: parsed body plus request metadata."""

    body: Any
    headers: Headers = field(default_factory=Headers)
    query: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = b""
    method: str = "POST"
    content_type: str = ""


@dataclass(frozen=True)
class Step:
    id: str
    type: str
    config: Any  # the step type's own parsed config
    when: Expr | None = None
    line: int | None = None
    index: int = 0  # position in its step list
    description: str = ""
    on_error: str = "fail"  # "continue": a failure for good is kept in steps.<id>.error and the run goes on


@dataclass(frozen=True)
class Trigger:
    verify: VerifyConfig | None = None
    dedupe: KeyExpr | None = None
    order_by: KeyExpr | None = None
    max_body: int | None = None
    index: Mapping[str, KeyExpr] = field(default_factory=dict)
    redact_headers: tuple[str, ...] = ()
    verify_token: str | None = None  # for GET hub.challenge handshakes


@dataclass(frozen=True)
class Flow:
    id: str
    name: str
    steps: tuple[Step, ...]
    trigger: Trigger = field(default_factory=Trigger)
    description: str = ""
    path: str = ""
    source: str = ""
    version: str = ""  # content hash of source (invariant I10)
    env_names: frozenset[str] = frozenset()
    on_failure: tuple[Step, ...] = ()  # run once when the run fails for good, with `error` in scope
    by_id: Mapping[str, Step] = field(default_factory=dict)  # every step, nested ones included (ids are unique)

    def step(self, step_id: str) -> Step:
        """A step by id, wherever it is nested; KeyError when there is none."""
        return self.by_id[step_id]


@dataclass(frozen=True)
class RunInfo:
    """What the template context exposes as ``run``."""

    id: int | None = None
    flow: str = ""
    received_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "flow": self.flow, "received_at": self.received_at}


def step_id_of(path: str) -> str:
    """``lines[sku-1].decrement`` -> ``decrement``; ``route.0.invoice`` -> ``invoice``."""
    tail = path.rsplit("]", 1)[-1]
    return tail.rsplit(".", 1)[-1] if "." in tail else tail


@dataclass
class StepResult:
    """One attempt of one step: every attempt is a row, keyed by the step's path (I5, I6)."""

    path: str  # the step's identity: its id at the top level, `lines[3].decrement` inside containers
    status: StepStatus
    attempt: int = 1
    position: int = 0
    input: Any = None
    output: Any = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    error_type: str | None = None
    error_message: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    retry_at: float | None = None  # set when another attempt is scheduled
    idempotency_key: str | None = None
    # What a resumed run continues from, set on an attempt that ends its path for good: complete,
    # unredacted (secrets sealed as references), never capped and never shown. The fields above are the
    # audit record: redacted and capped for display, never read back into a run.
    state: Any = None

    @property
    def step_id(self) -> str:
        """The declared id of the step (the last segment of its path)."""
        return step_id_of(self.path)

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at) * 1000, 2)


@dataclass
class RunResult:
    status: RunStatus
    steps: list[StepResult] = field(default_factory=list)
    error: str | None = None
    next_attempt_at: float | None = None  # when status is WAITING
    output: Any = None
    deferred_origin: str | None = None  # WAITING because destination protection held a call to this origin back


@dataclass
class EventRecord:
    """The raw inbound request as stored: headers and body bytes as received (secret headers redacted)."""

    id: int
    flow_id: str
    received_at: float
    method: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    content_type: str

    def body_text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class RunRecord:
    id: int
    flow_id: str
    flow_version: str
    event_id: int
    status: RunStatus
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    next_attempt_at: float | None = None
    dedupe_key: str | None = None
    order_key: str | None = None
    error: str | None = None
    reason: str | None = None
    parent_run_id: int | None = None
    replay_kind: str | None = None
    current_step: str | None = None
    deliveries: int = 1
    lease_owner: str | None = None
    lease_expires_at: float | None = None

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at) * 1000, 1)


@dataclass
class RunDetail:
    run: RunRecord
    event: EventRecord
    steps: list[StepResult]
    children: list[RunRecord] = field(default_factory=list)
    index: dict[str, str] = field(default_factory=dict)
