"""run_flow: interpret a flow's tree of steps for one event, in-process, with no database, queue or web.

Every executed step has a path, its identity in records, stubs and Idempotency-Keys: its id at the
top level, ``lines[sku-42].decrement`` inside a foreach item, ``route.0.invoice`` inside a switch
case, ``on_failure.alert`` in the error handler. The runner walks the tree through each step type's
declaration (side effects, retry, timeout, destination, children) and knows no type by name.

Resuming: callers pass what earlier attempts recorded (``done``: the final record of each path that
ended, with its resume state, and ``attempts``). Pure steps are computed again (cheap and
deterministic); a path with side effects that ended is never executed again (I5): its kept result
(``StepResult.state``, complete and unredacted but for sealed secrets) is what later steps read. What
operators see is a separate copy, redacted and capped. The run stops at the first step that needs a
later retry and says when (WAITING), so a worker never sleeps; ``run_to_end`` loops that for the CLI.
Progress is reported through a Recorder, which the service backs with the store so each result is
committed before the next step with side effects starts (I7).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import ChainMap
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from engine.destinations import Verdict
from engine.errors import EngineError, HttpStepError, LeaseLost, StepError, StoreError
from engine.model import Event, Flow, RunInfo, RunResult, RunStatus, Step, StepResult, StepStatus
from engine.redaction import cap, public_names, redact, seal, unseal, verify_names
from engine.steps import REGISTRY, RunOptions, StepContext, walk
from engine.templating import Expr, RenderContext

log = logging.getLogger("hookline.runner")

MAX_RETRY_DELAY = 24 * 3600.0
__all__ = ["Gate", "Recorder", "cap", "idempotency_key", "redact", "run_flow", "run_to_end"]


class Gate(Protocol):
    """Destination protection (breaker, rate, concurrency) shared across workers; see engine.destinations."""

    def admit(self, origin: str, step: Step, holder: str) -> Verdict:
        """May this step call ``origin`` (scheme://host:port) now? A refusal is not an attempt: the run waits."""

    def settle(self, origin: str, step: Step, holder: str, failed: bool) -> None:
        """The call admitted for ``holder`` finished; ``failed`` when it says the origin is unwell."""


class Recorder(Protocol):
    """Where progress goes. Calls are never concurrent (the runner serializes them), but several
    attempts may be started before their results arrive (a foreach with ``concurrency``)."""

    def step_started(self, step: Step, path: str, attempt: int, started_at: float, idempotency_key: str) -> None:
        """Called before a step with side effects runs, so a crash mid-step is visible."""

    def step_finished(self, result: StepResult) -> None:
        """Called with every attempt's result; it must be durable before the next call starts (I7)."""


def idempotency_key(flow_id: str, run_id: int | str | None, path: str) -> str:
    """Same for every attempt of one step path of one run; different across paths and runs (I6)."""
    return hashlib.sha256(f"hookline:{flow_id}:{run_id}:{path}".encode()).hexdigest()[:32]


def template_context(event: Event, run: RunInfo, outputs: Mapping[str, Any]) -> dict[str, Any]:
    return {"event": event.body, "headers": event.headers, "query": event.query, "steps": outputs,
            "run": run.as_dict()}


class Halt(Exception):  # noqa: N818 - a control signal, not an error
    """The run stops here: a failure for good, a wait for a retry or a destination, or a filter."""

    def __init__(self, status: RunStatus, error: str | None = None, *, next_attempt_at: float | None = None,
                 deferred_origin: str | None = None, failure: dict[str, Any] | None = None, output: Any = None) -> None:
        super().__init__(error)
        self.status, self.error, self.output = status, error, output
        self.next_attempt_at, self.deferred_origin, self.failure = next_attempt_at, deferred_origin, failure


@dataclass
class Scope:
    """The ``steps.<id>`` a block writes and the variables it sees (``item``, ``loop``, ``error``)."""

    outputs: dict[str, Any]
    visible: MutableMapping[str, Any]
    variables: dict[str, Any] = field(default_factory=dict)

    def child(self, variables: Mapping[str, Any]) -> Scope:
        outputs: dict[str, Any] = {}
        return Scope(outputs, ChainMap(outputs, self.visible), {**self.variables, **variables})


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
    """Run the paths not yet done; return at the end, at a failure for good, or when a retry must wait."""
    return _Run(flow, event, http=http, recorder=recorder, run=run or RunInfo(flow=flow.id), env=env or {},
                done=done or {}, attempts=attempts or {}, clock=clock, rng=rng, dry_run=dry_run, stubs=stubs or {},
                options=options or RunOptions(), gate=gate).result()


class _Run:
    def __init__(self, flow: Flow, event: Event, *, http: httpx.Client | None, recorder: Recorder | None,
                 run: RunInfo, env: Mapping[str, str], done: Mapping[str, StepResult], attempts: Mapping[str, int],
                 clock: Callable[[], float], rng: Callable[[], float], dry_run: bool, stubs: Mapping[str, Any],
                 options: RunOptions, gate: Gate | None) -> None:
        self.flow, self.http, self.recorder, self.run, self.env = flow, http, recorder, run, env
        self.done, self.attempts, self.clock, self.rng = done, attempts, clock, rng
        self.dry_run, self.stubs, self.options, self.gate = dry_run, stubs, options, gate
        self.base = template_context(event, run, {})
        self.secrets: dict[str, str] = {}
        self.masked = verify_names(flow)
        self.results: list[StepResult] = []
        self.lock = threading.RLock()
        # a run with no id (the CLI, fixtures) keys its calls by the flow and event objects: the same across
        # run_to_end's rounds, different for every event
        self.run_key: int | str = run.id if run.id is not None else f"local-{id(flow)}-{id(event)}"

    # --- the whole run ---------------------------------------------------------------------------

    def result(self) -> RunResult:
        top: dict[str, Any] = {}
        scope = Scope(top, top)
        try:
            output = self.steps(self.flow.steps, "", scope)
            return RunResult(RunStatus.SUCCEEDED, self.results, output=output)
        except Halt as halt:
            if halt.status is RunStatus.FAILED and self.flow.on_failure:
                halt = self.on_failure(halt, top)
            return RunResult(halt.status, self.results, error=halt.error, next_attempt_at=halt.next_attempt_at,
                             output=halt.output, deferred_origin=halt.deferred_origin)

    def on_failure(self, halt: Halt, top: dict[str, Any]) -> Halt:
        """The flow's error handler: once per failed run, with ``error`` in scope; the run stays failed."""
        for step in walk(self.flow.steps):
            top.setdefault(step.id, None)
        failure = dict(halt.failure or {"step": None, "message": halt.error})
        failure.update(run_id=self.run.id, run_url=f"{self.options.public_url}/runs/{self.run.id}")
        scope = Scope(top, top, {"error": failure})
        try:
            self.steps(self.flow.on_failure, "on_failure.", scope)
        except Halt as inner:
            if inner.status is RunStatus.WAITING:
                return Halt(RunStatus.WAITING, f"{halt.error}; on_failure: {inner.error}",
                            next_attempt_at=inner.next_attempt_at, deferred_origin=inner.deferred_origin)
            if inner.status is RunStatus.FAILED:
                return Halt(RunStatus.FAILED, f"{halt.error} (on_failure failed: {inner.error})")
        return halt

    # --- blocks ----------------------------------------------------------------------------------

    def steps(self, steps: Sequence[Step], prefix: str, scope: Scope) -> Any:
        last = None
        for step in steps:
            produced, output = self.step(step, prefix + step.id, scope)
            if produced:
                last = output
        return last

    def context(self, scope: Scope) -> RenderContext:
        ctx = RenderContext({**self.base, "steps": scope.visible, **scope.variables}, self.env)
        ctx.secrets = self.secrets  # one collection per run: every value handed out is redacted
        return ctx

    # --- one step --------------------------------------------------------------------------------

    def step(self, step: Step, path: str, scope: Scope) -> tuple[bool, Any]:
        """Run one step (or resume it); returns (whether it produced an output, the output)."""
        kind = REGISTRY[step.type]
        previous = self.done.get(path)
        state = previous.state if previous is not None and isinstance(previous.state, dict) else None
        attempt = self.attempts.get(path, 0) + 1
        key = idempotency_key(self.flow.id, self.run_key, path)
        started = self.clock()
        ctx = self.context(scope)
        try:
            if step.when is not None and not step.when.render(ctx):
                scope.outputs[step.id] = None
                if previous is None:
                    self.record(StepResult(path, StepStatus.SKIPPED, attempt, step.index, started_at=started,
                                           finished_at=self.clock(), state={"status": "skipped"}), ctx)
                return False, None
        except EngineError as exc:
            return self.failed(step, path, scope, ctx, _failure(exc, path, attempt, step.index, None, started,
                                                                self.clock(), prefix="when: "), exc, previous)
        if state is not None and kind.side_effects:  # ended in an earlier attempt: never again (I5)
            return self.resumed(step, path, scope, state)
        stub_key = path if path in self.stubs else step.id
        sctx = StepContext(render=ctx, step=step, attempt=attempt, idempotency_key=key, http=self.http,
                           dry_run=self.dry_run, stub=self.stubs.get(stub_key), has_stub=stub_key in self.stubs,
                           options=self.options, path=path, blocks=_Blocks(self, step, path, scope))
        live = not self.dry_run and not sctx.has_stub
        origin: str | None = None
        try:
            if self.gate is not None and live and kind.destination is not None:
                origin = kind.destination(sctx)
                if origin is not None:
                    verdict = self.gate.admit(origin, step, key)
                    if not verdict.allowed:
                        raise Halt(RunStatus.WAITING, f"step {path}: {verdict.reason}",
                                   next_attempt_at=verdict.retry_at + self.rng(), deferred_origin=origin)
            if kind.side_effects and self.recorder is not None and not self.dry_run:
                with self.lock:
                    self.recorder.step_started(step, path, attempt, started, key)
            try:
                outcome = kind.execute(sctx)
            except Exception as exc:
                if origin is not None and self.gate is not None:
                    outage = not isinstance(exc, Halt) and bool(kind.outage and kind.outage(exc))
                    self.gate.settle(origin, step, key, failed=outage)
                raise
            if origin is not None and self.gate is not None:
                self.gate.settle(origin, step, key, failed=False)
        except Halt as halt:
            if halt.status is RunStatus.FAILED and step.on_error == "continue" and not kind.side_effects:
                return self.continued(step, path, scope, ctx, halt.failure or {"message": halt.error}, previous)
            raise
        except (LeaseLost, StoreError):
            raise  # the record could not be written (or is no longer ours): not the step's failure
        except EngineError as exc:
            result = _failure(exc, path, attempt, step.index, key if kind.side_effects else None, started, self.clock())
            return self.failed(step, path, scope, ctx, result, exc, previous)
        except Exception as exc:  # noqa: BLE001 - a bug must become a failed step, never a dead worker
            log.exception("step %s of flow %s crashed", path, self.flow.id)
            result = StepResult(path, StepStatus.FAILED, attempt, step.index, error_type="InternalError",
                                error_message=f"internal error: {type(exc).__name__}: {exc}", started_at=started,
                                finished_at=self.clock(), idempotency_key=key if kind.side_effects else None)
            return self.failed(step, path, scope, ctx, result, None, previous)
        output = outcome.output
        if step.on_error == "continue" and isinstance(output, dict):
            output = {**output, "error": None}
        scope.outputs[step.id] = output
        status = StepStatus.FILTERED if outcome.stop else StepStatus.SUCCEEDED
        if previous is None or kind.side_effects:
            kept: dict[str, Any] = {"status": "filtered" if outcome.stop else "succeeded"}
            if kind.side_effects and not self.dry_run:
                kept["output"] = seal(output, self.secrets)
            self.record(StepResult(path, status, attempt, step.index, input=outcome.input, output=output,
                                   request=outcome.request, response=outcome.response, started_at=started,
                                   finished_at=self.clock(), idempotency_key=key if kind.side_effects else None,
                                   state=kept), ctx)
        if outcome.stop:
            raise Halt(RunStatus.FILTERED, output=output, failure={"step": path})
        return True, output

    def resumed(self, step: Step, path: str, scope: Scope, state: Mapping[str, Any]) -> tuple[bool, Any]:
        """A path that ended in an earlier attempt: its kept result, or its failure raised again."""
        status = state.get("status")
        if status == "skipped":
            scope.outputs[step.id] = None
            return False, None
        if status == "failed":
            failure = dict(state.get("error") or {})
            raise Halt(RunStatus.FAILED, f"step {path}: {failure.get('message')}", failure=failure)
        output = unseal(state.get("output"), self.env.get)
        scope.outputs[step.id] = output
        return True, output

    def failed(self, step: Step, path: str, scope: Scope, ctx: RenderContext, result: StepResult,
               exc: EngineError | None, previous: StepResult | None) -> tuple[bool, Any]:
        """Record a failed attempt; then wait for a retry, go on (``on_error: continue``) or stop the run."""
        kind = REGISTRY[step.type]
        policy = kind.retry(step.config) if step.config is not None else None
        retryable = isinstance(exc, StepError) and exc.retryable and not self.dry_run and not (
            path in self.stubs or step.id in self.stubs)
        if retryable and policy is not None and result.attempt < policy.max_attempts:
            delay = policy.delay(result.attempt, self.rng)
            if isinstance(exc, HttpStepError) and exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            result.retry_at = self.clock() + min(delay, MAX_RETRY_DELAY)
            self.record(result, ctx)
            raise Halt(RunStatus.WAITING, f"step {path}: {result.error_message}", next_attempt_at=result.retry_at)
        if retryable and policy is not None:
            result.error_message = f"{result.error_message} (gave up after {result.attempt} attempts)"
        failure = {"step": path, "message": result.error_message, "type": result.error_type,
                   "status": getattr(exc, "status", None), "attempts": result.attempt}
        if step.on_error == "continue":
            return self.continued(step, path, scope, ctx, failure, previous, result)
        result.state = {"status": "failed", "error": redact(failure, self.secrets)}
        if previous is None or kind.side_effects:
            self.record(result, ctx)
        raise Halt(RunStatus.FAILED, f"step {path}: {result.error_message}", failure=failure)

    def continued(self, step: Step, path: str, scope: Scope, ctx: RenderContext, failure: dict[str, Any],
                  previous: StepResult | None, result: StepResult | None = None) -> tuple[bool, Any]:
        """``on_error: continue``: the failure is the step's output (``steps.<id>.error``) and the run goes on."""
        output = {"error": failure, "response": (result.response if result is not None else None)}
        scope.outputs[step.id] = output
        if result is None:
            result = StepResult(path, StepStatus.FAILED, self.attempts.get(path, 0) + 1, step.index,
                                error_type=failure.get("type") or "StepError", error_message=str(failure.get("message")),
                                started_at=self.clock(), finished_at=self.clock())
        result.error_message = f"{result.error_message} (on_error: continue)"
        result.output = output
        result.state = {"status": "continued", "output": seal(output, self.secrets)}
        if previous is None or REGISTRY[step.type].side_effects:
            self.record(result, ctx)
        return True, output

    def record(self, result: StepResult, ctx: RenderContext) -> None:
        """The audit copy is redacted and capped; ``state`` stays whole (secrets sealed, never shown)."""
        public = public_names(self.secrets, self.masked)  # URLs show their hosts; secrets stay masked
        for name in ("input", "output", "request", "response", "error_message"):
            setattr(result, name, redact(getattr(result, name), self.secrets, public))
        result.input = cap(result.input, self.options.max_recorded_body)
        result.output = cap(result.output, self.options.max_recorded_body)
        with self.lock:
            self.results.append(result)
            if self.recorder is not None:
                self.recorder.step_finished(result)


class _Blocks:
    """The runner's side of engine.steps.Blocks, for one container step."""

    def __init__(self, runner: _Run, step: Step, path: str, scope: Scope) -> None:
        self.runner, self.step, self.path, self.scope = runner, step, path, scope

    def run(self, steps: Sequence[Step], label: str) -> Any:
        return self.runner.steps(steps, f"{self.path}.{label}.", self.scope)

    def skip(self, steps: Sequence[Step]) -> None:
        for step in steps:
            self.scope.outputs.setdefault(step.id, None)
            if step.config is not None:
                for block in REGISTRY[step.type].children(step.config):
                    if not block.scoped:
                        self.skip(block.steps)

    def context(self, variables: Mapping[str, Any]) -> RenderContext:
        return self.runner.context(self.scope.child(variables))

    def each(self, steps: Sequence[Step], items: Sequence[tuple[str, Mapping[str, Any]]], concurrency: int,
             output: Expr | None) -> list[Any]:
        def one(key: str, variables: Mapping[str, Any]) -> Any:
            scope = self.scope.child(variables)
            try:
                last = self.runner.steps(steps, f"{self.path}[{key}].", scope)
            except Halt as halt:
                if halt.status is not RunStatus.FILTERED:
                    raise
                return None  # a filter inside an item ends that item only
            return output.render(self.runner.context(scope)) if output is not None else last

        if concurrency <= 1 or len(items) <= 1:
            return [one(k, v) for k, v in items]
        return _parallel(one, items, concurrency)


def _parallel(fn: Callable[[str, Mapping[str, Any]], Any], items: Sequence[tuple[str, Mapping[str, Any]]],
              concurrency: int) -> list[Any]:
    """Items ``concurrency`` at a time, started in order; after a halt no new item starts, those in flight
    finish (their results are recorded), and the first halt by item order stops the run (a failure before
    a wait: a wait would retry an item while a failed one cannot succeed)."""
    results: list[Any] = [None] * len(items)
    halts: dict[int, Halt] = {}
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="hookline-foreach") as pool:
        running: dict[Future[Any], int] = {}
        nxt = 0
        while nxt < len(items) or running:
            while nxt < len(items) and len(running) < concurrency and not halts:
                running[pool.submit(fn, *items[nxt])] = nxt
                nxt += 1
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                index = running.pop(fut)
                try:
                    results[index] = fut.result()
                except Halt as halt:
                    halts[index] = halt
            if halts and nxt < len(items) and not running:
                break
    if halts:
        failed = [i for i, h in sorted(halts.items()) if h.status is RunStatus.FAILED]
        first = failed[0] if failed else min(halts, key=lambda i: halts[i].next_attempt_at or 0.0)
        raise halts[first]
    return results


def _failure(exc: EngineError, path: str, attempt: int, position: int, key: str | None, started: float,
             finished: float, prefix: str = "") -> StepResult:
    message = exc.message if isinstance(exc, StepError) else str(exc)
    return StepResult(
        path, StepStatus.FAILED, attempt, position,
        request=getattr(exc, "request", None),
        response=getattr(exc, "response", None),
        error_type=type(exc).__name__,
        error_message=prefix + message,
        started_at=started,
        finished_at=finished,
        idempotency_key=key,
    )


def resume_maps(records: Sequence[StepResult]) -> tuple[dict[str, StepResult], dict[str, int]]:
    """From a run's records: the record that ended each path (it carries resume state), and attempts per path."""
    done: dict[str, StepResult] = {}
    attempts: dict[str, int] = {}
    for r in records:
        attempts[r.path] = max(attempts.get(r.path, 0), r.attempt)
        if r.state is not None:
            done[r.path] = r
    return done, attempts


def run_to_end(flow: Flow, event: Event, *, sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.time, on_wait: Callable[[RunResult], None] | None = None,
               **kwargs: Any) -> RunResult:
    """In-process loop over run_flow, sleeping between retries (the CLI's `hookline run`)."""
    history: list[StepResult] = []
    run = kwargs.pop("run", None) or RunInfo(flow=flow.id, id=None)
    kwargs.setdefault("run", run)
    while True:
        done, attempts = resume_maps(history)
        result = run_flow(flow, event, done=done, attempts=attempts, clock=clock, **kwargs)
        history.extend(result.steps)
        if result.status is not RunStatus.WAITING:
            result.steps = history
            return result
        if on_wait is not None:
            on_wait(result)
        sleep(max(0.0, (result.next_attempt_at or clock()) - clock()))
