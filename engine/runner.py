"""run_flow: execute a flow's steps for one event, in-process, with no database, queue or web.

The runner is resumable: callers pass the results of steps already done (never run again, I5)
and how many attempts each step has had. It stops at the first step that needs a later retry and
says when (status WAITING), so a worker never sleeps; ``run_to_end`` loops that for the CLI.
Progress is reported through a two-method Recorder, which the service backs with the store so
each step's result is committed before the next step starts (I7).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

import httpx

from engine.destinations import Verdict
from engine.errors import EngineError, HttpStepError, StepError
from engine.model import Event, Flow, RunInfo, RunResult, RunStatus, Step, StepResult, StepStatus
from engine.steps import REGISTRY, RetryPolicy, RunOptions, StepContext
from engine.templating import RenderContext

log = logging.getLogger("hookline.runner")

MAX_RETRY_DELAY = 24 * 3600.0


class Gate(Protocol):
    """Destination protection (breaker, rate, concurrency) shared across workers; see engine.destinations."""

    def admit(self, host: str, step: Step, holder: str) -> Verdict:
        """May this step call ``host`` now? A refusal is not an attempt: the run waits until retry_at."""

    def settle(self, host: str, step: Step, holder: str, failed: bool) -> None:
        """The call admitted for ``holder`` finished; ``failed`` when it says the host is unwell."""


class Recorder(Protocol):
    def step_started(self, step: Step, attempt: int, started_at: float, idempotency_key: str) -> None:
        """Called before a step with side effects runs, so a crash mid-step is visible."""

    def step_finished(self, result: StepResult) -> None:
        """Called with every attempt's result; it must be durable before the next step starts (I7)."""


def idempotency_key(flow_id: str, run_id: int | str | None, step_id: str) -> str:
    """Same for every attempt of one step of one run; different across steps and runs (I6)."""
    return hashlib.sha256(f"hookline:{flow_id}:{run_id}:{step_id}".encode()).hexdigest()[:32]


def redact(value: Any, secrets: Mapping[str, str]) -> Any:
    """Replace every secret value with ``${NAME}`` inside strings, lists and mappings (I9).

    Secrets also reach records encoded: percent-encoded in URLs and form bodies, escaped in JSON
    bodies. Each of those forms is replaced too.
    """
    pairs = _redaction_pairs(tuple(secrets.items()))
    return _redact(value, pairs) if pairs else value


@functools.lru_cache(maxsize=256)
def _redaction_pairs(secrets: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """(encoded secret, ``${NAME}``), longest first; the same few secrets recur in every run and step."""
    pairs: dict[str, str] = {}
    for name, secret in secrets:
        if not secret:
            continue
        for form in _encoded_forms(secret):
            pairs.setdefault(form, f"${{{name}}}")
    return sorted(pairs.items(), key=lambda p: -len(p[0]))


def _encoded_forms(secret: str) -> set[str]:
    forms = {secret, quote(secret, safe=""), quote(secret, safe="/"), quote_plus(secret), quote_plus(secret, safe="/"),
             str(httpx.QueryParams({"k": secret}))[2:], json.dumps(secret)[1:-1],
             json.dumps(secret, ensure_ascii=False)[1:-1]}
    return {f for f in forms if f}


def _redact(value: Any, pairs: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        for secret, name in pairs:
            if secret in value:
                value = value.replace(secret, name)
        return value
    if isinstance(value, dict):
        return {_redact(k, pairs): _redact(v, pairs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, pairs) for v in value]
    return value


def cap(value: Any, limit: int) -> Any:
    """Values whose JSON exceeds ``limit`` bytes are stored as a marker with a preview (HOOKLINE_MAX_STORED_BODY).

    Only the record is cut: later steps still see the whole value.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        return value
    if len(text) <= limit:
        return value
    return {"_truncated": True, "bytes": len(text), "limit": limit,
            "preview": text[: max(0, limit - 200)] + f"… [{len(text) - limit + 200} more bytes not stored]"}


def template_context(event: Event, run: RunInfo, outputs: Mapping[str, Any]) -> dict[str, Any]:
    return {"event": event.body, "headers": event.headers, "query": event.query, "steps": outputs,
            "run": run.as_dict()}


def run_flow(
    flow: Flow,
    event: Event,
    *,
    http: httpx.Client | None = None,
    recorder: Recorder | None = None,
    run: RunInfo | None = None,
    env: Mapping[str, str] | None = None,
    done: Mapping[str, StepResult] | None = None,
    attempts: Mapping[str, int] | None = None,
    clock: Callable[[], float] = time.time,
    rng: Callable[[], float] = random.random,
    dry_run: bool = False,
    stubs: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
    gate: Gate | None = None,
) -> RunResult:
    """Run the steps not yet done; return at the end, at a failure, or when a retry must wait."""
    run = run or RunInfo(flow=flow.id)
    options = options or RunOptions()
    done = done or {}
    attempts = attempts or {}
    stubs = stubs or {}
    outputs: dict[str, Any] = {}
    results: list[StepResult] = []
    ctx = RenderContext(template_context(event, run, outputs), env or {})

    def record(result: StepResult) -> StepResult:
        for name in ("input", "output", "request", "response", "error_message"):
            setattr(result, name, redact(getattr(result, name), ctx.secrets))
        result.input = cap(result.input, options.max_recorded_body)
        result.output = cap(result.output, options.max_recorded_body)
        results.append(result)
        if recorder is not None:
            recorder.step_finished(result)
        return result

    last_output: Any = None
    for position, step in enumerate(flow.steps):
        previous = done.get(step.id)
        if previous is not None and previous.status.done:
            outputs[step.id] = previous.output
            last_output = previous.output if previous.status is StepStatus.SUCCEEDED else last_output
            continue
        attempt = attempts.get(step.id, 0) + 1
        key = idempotency_key(flow.id, run.id if run.id is not None else id(results), step.id)
        started = clock()
        try:
            if step.when is not None and not step.when.render(ctx):
                outputs[step.id] = None
                record(StepResult(step.id, StepStatus.SKIPPED, attempt, position, started_at=started, finished_at=clock()))
                continue
        except EngineError as exc:
            res = record(StepResult(step.id, StepStatus.FAILED, attempt, position, error_type=type(exc).__name__,
                                    error_message=f"when: {exc}", started_at=started, finished_at=clock()))
            return RunResult(RunStatus.FAILED, results, error=f"step {step.id}: {res.error_message}")
        step_type = REGISTRY[step.type]
        sctx = StepContext(render=ctx, step=step, attempt=attempt, idempotency_key=key, http=http, dry_run=dry_run,
                           stub=stubs.get(step.id), has_stub=step.id in stubs, options=options)
        live = not dry_run and step.id not in stubs
        host: str | None = None
        try:
            if gate is not None and live and step_type.destination is not None:
                host = step_type.destination(sctx)
                if host is not None:
                    verdict = gate.admit(host, step, key)
                    if not verdict.allowed:
                        return RunResult(RunStatus.WAITING, results, error=f"step {step.id}: {verdict.reason}",
                                         next_attempt_at=verdict.retry_at + rng(), deferred_host=host)
            if step_type.side_effects and recorder is not None and not dry_run:
                recorder.step_started(step, attempt, started, key)
            try:
                outcome = step_type.execute(sctx)
            except Exception as exc:
                if host is not None and gate is not None:
                    gate.settle(host, step, key, failed=bool(step_type.outage and step_type.outage(exc)))
                raise
            if host is not None and gate is not None:
                gate.settle(host, step, key, failed=False)
        except EngineError as exc:
            result = _failure(step, exc, attempt, position, key, started, clock())
            policy: RetryPolicy | None = getattr(step.config, "retry", None)
            retryable = isinstance(exc, StepError) and exc.retryable and not dry_run and step.id not in stubs
            if retryable and policy is not None and attempt < policy.max_attempts:
                delay = policy.delay(attempt, rng)
                if isinstance(exc, HttpStepError) and exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                result.retry_at = clock() + min(delay, MAX_RETRY_DELAY)
                record(result)
                return RunResult(RunStatus.WAITING, results, error=f"step {step.id}: {result.error_message}",
                                 next_attempt_at=result.retry_at)
            if retryable and policy is not None:
                result.error_message = f"{result.error_message} (gave up after {attempt} attempts)"
            record(result)
            return RunResult(RunStatus.FAILED, results, error=f"step {step.id}: {result.error_message}")
        except Exception as exc:  # noqa: BLE001 - a bug must become a failed step, never a dead worker
            log.exception("step %s of flow %s crashed", step.id, flow.id)
            record(StepResult(step.id, StepStatus.FAILED, attempt, position, error_type="InternalError",
                              error_message=f"internal error: {type(exc).__name__}: {exc}", started_at=started,
                              finished_at=clock(), idempotency_key=key))
            return RunResult(RunStatus.FAILED, results, error=f"step {step.id}: internal error")
        status = StepStatus.FILTERED if outcome.stop else StepStatus.SUCCEEDED
        outputs[step.id] = outcome.output
        last_output = outcome.output
        record(StepResult(step.id, status, attempt, position, input=outcome.input, output=outcome.output,
                          request=outcome.request, response=outcome.response, started_at=started, finished_at=clock(),
                          idempotency_key=key if step_type.side_effects else None))
        if outcome.stop:
            return RunResult(RunStatus.FILTERED, results, output=outcome.output)
    return RunResult(RunStatus.SUCCEEDED, results, output=last_output)


def _failure(step: Step, exc: EngineError, attempt: int, position: int, key: str, started: float,
             finished: float) -> StepResult:
    message = exc.message if isinstance(exc, StepError) else str(exc)
    return StepResult(
        step.id, StepStatus.FAILED, attempt, position,
        input=None,
        request=getattr(exc, "request", None),
        response=getattr(exc, "response", None),
        error_type=type(exc).__name__,
        error_message=message,
        started_at=started,
        finished_at=finished,
        idempotency_key=key if REGISTRY[step.type].side_effects else None,
    )


def run_to_end(flow: Flow, event: Event, *, sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.time, on_wait: Callable[[RunResult], None] | None = None,
               **kwargs: Any) -> RunResult:
    """In-process loop over run_flow, sleeping between retries (the CLI's `hookline run`)."""
    done: dict[str, StepResult] = {}
    attempts: dict[str, int] = {}
    history: list[StepResult] = []
    while True:
        result = run_flow(flow, event, done=done, attempts=attempts, clock=clock, **kwargs)
        history.extend(result.steps)
        for step_result in result.steps:
            attempts[step_result.path] = step_result.attempt
            if step_result.status.done:
                done[step_result.path] = step_result
        if result.status is not RunStatus.WAITING:
            result.steps = history
            return result
        if on_wait is not None:
            on_wait(result)
        sleep(max(0.0, (result.next_attempt_at or clock()) - clock()))
