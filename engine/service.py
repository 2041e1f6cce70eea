"""Use cases shared by the web, worker and CLI adapters; never imports flask or huey.

accept_event stores an inbound request and its run (I1, I2); execute_run claims a run with a lease
and runs it step by step, committing each result before the next step starts (I4, I5, I7); reap
finds runs that lost their worker or their queue message. Scheduling is injected as
``enqueue(run_id, delay)`` so Huey stays at the edge.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx

from engine.alerts import Alerter
from engine.catalog import FlowCatalog
from engine.config import Settings, environ
from engine.connection_store import StoreTokenCache
from engine.connections.runtime import ConnectionRuntime
from engine.errors import FlowInvalid, FlowNotLoaded, NotRetryable, RunNotFound, StoreUnavailable
from engine.events import make_event, redact_pairs
from engine.loader import load_flow
from engine.model import Flow, Headers, RunDetail, RunInfo, RunResult, RunStatus
from engine.presets import secret_fields
from engine.runner import resume_maps, run_flow
from engine.steps import RunOptions
from engine.store import Accepted, LeaseLost, RunStore
from engine.store.gate import StoreGate

log = logging.getLogger("hookline.service")

Enqueue = Callable[[int, float], None]


def _no_enqueue(run_id: int, delay: float) -> None:
    log.warning("no queue configured; run %s waits for the reaper", run_id)


def make_http_client(settings: Settings) -> httpx.Client:
    """One pooled client per process; every request still carries its own timeout.

    Its transport resolves each name once and connects to the address it checked (engine.outbound), so
    no process can be rebound to a link-local target between the check and the connect.
    """
    from engine.outbound import PinnedTransport

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    return httpx.Client(
        transport=PinnedTransport(limits=limits),
        timeout=httpx.Timeout(settings.http_timeout_s),
        limits=limits,
        follow_redirects=False,
        headers={"User-Agent": settings.user_agent},
    )


@lru_cache(maxsize=256)
def _compile(version: str, source: str, path: str) -> Flow:
    return load_flow(source, path or f"<flow version {version}>")


class Service:
    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        catalog: FlowCatalog,
        *,
        enqueue: Enqueue = _no_enqueue,
        pending: Callable[[], int] | None = None,
        http: httpx.Client | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.enqueue = enqueue
        self.pending = pending
        self.http = http or make_http_client(settings)
        self.env = env if env is not None else environ(settings)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.options = RunOptions.from_settings(settings, ConnectionRuntime(
            catalog.connection, StoreTokenCache(store), owner=self.owner, secret_key=settings.secret_key))
        self.gate = StoreGate(store, settings)
        self.alerts = Alerter(settings, store, self.http, self.options.connections, self.env)  # SettingsError

    # --- ingress ------------------------------------------------------------------------------

    def redacted_headers(self, flow: Flow) -> tuple[str, ...]:
        names = list(self.settings.redact_headers) + list(flow.trigger.redact_headers)
        if flow.trigger.verify is not None:
            names += list(secret_fields(flow.trigger.verify)[0])
        return tuple(n.lower() for n in names)

    def accept_event(self, flow: Flow, *, method: str, query_string: str, headers: Sequence[tuple[str, str]],
                     body: bytes, content_type: str, parsed: Any) -> Accepted:
        """Store the request (secret headers redacted, body whole) and a queued run; then enqueue it.

        The commit happens before this returns; a queue failure is logged and left to the reaper
        (the database is the record), so an acknowledged event is never lost and never doubled.
        """
        hdrs = Headers(list(headers))
        trig = flow.trigger
        dedupe = trig.dedupe.extract(parsed, hdrs) if trig.dedupe else None
        order = trig.order_by.extract(parsed, hdrs) if trig.order_by else None
        index = {}
        for name, expr in trig.index.items():
            value = expr.extract(parsed, hdrs)
            if value is not None:
                index[name] = value
        if flow.trigger.verify is not None:
            secret_query = set(secret_fields(flow.trigger.verify)[1])
            if secret_query:
                pairs = parse_qsl(query_string, keep_blank_values=True)
                query_string = urlencode([(k, "[redacted]" if k in secret_query else v) for k, v in pairs])
        accepted = self.store.accept(
            flow_id=flow.id, version=flow.version, source=flow.source, path=flow.path, method=method,
            query=query_string, headers=redact_pairs(headers, self.redacted_headers(flow)), body=body,
            content_type=content_type, dedupe_key=dedupe, order_key=order, index=index,
        )
        if not accepted.duplicate:
            self._enqueue(accepted.run_id, 0.0)
        return accepted

    def _enqueue(self, run_id: int, delay: float) -> bool:
        try:
            self.enqueue(run_id, delay)
            return True
        except Exception as exc:  # noqa: BLE001 - any queue failure: the stored run is picked up by the reaper
            log.warning("could not enqueue run %s (%s); the reaper will", run_id, exc)
            return False

    # --- execution ----------------------------------------------------------------------------

    def flow_version(self, version: str, source: str, path: str) -> Flow:
        return _compile(version, source, path)

    def execute_run(self, run_id: int) -> RunStatus | None:
        """Claim and run; None when another worker has it, it is finished, or it must wait its turn."""
        claim = self.store.claim(run_id, self.owner, self.settings.lease_s, lazy=True,
                                 default_timeout=self.settings.http_timeout_s)
        if claim is None:
            return None
        run = claim.run
        try:
            try:
                flow = self.flow_version(run.flow_version, claim.source, claim.path)
            except FlowInvalid as exc:
                result = RunResult(RunStatus.FAILED, error=f"flow version {run.flow_version} no longer loads: {exc}")
                claim.close(result)
                self.alerts.run_failed(run_id, run.flow_id, result)
                return result.status
            done, attempts = resume_maps(claim.steps)
            info = RunInfo(id=run.id, flow=run.flow_id, received_at=_iso(claim.event.received_at))
            result = run_flow(flow, make_event(claim.event, flow.trigger), http=self.http, recorder=claim, run=info,
                              env=self.env, done=done, attempts=attempts, options=self.options, gate=self.gate)
            claim.close(result)  # with the results not yet written (the unit of work batches them)
        except LeaseLost as exc:
            log.warning("%s; stopping", exc)
            return None
        except StoreUnavailable:
            log.warning("database unavailable while running run %s; it will be resumed", run_id)
            raise
        self._observe(run_id, run.flow_id, flow, result)
        if result.status is RunStatus.WAITING and result.next_attempt_at is not None:
            self._enqueue(run_id, max(0.0, result.next_attempt_at - time.time()))
        elif result.status.terminal and run.order_key is not None:
            nxt = self.store.next_in_order(run.flow_id, run.order_key)
            if nxt is not None:
                self._enqueue(nxt, 0.0)
        if result.status is RunStatus.FAILED:  # closed for good: announce it (bounded, never changes the run)
            self.alerts.run_failed(run_id, run.flow_id, result)
        return result.status

    def _observe(self, run_id: int, flow_id: str, flow: Flow, result: RunResult) -> None:
        """One log line per step and per run (with run_id), and the matching metrics."""
        from urllib.parse import urlsplit

        from engine import metrics

        for step in result.steps:
            kind = flow.step(step.path).type if any(s.id == step.path for s in flow.steps) else "?"
            if step.duration_ms is not None:
                metrics.STEPS.labels(flow_id, kind, step.status.value).observe(step.duration_ms / 1000)
            if step.request and step.response and step.response.get("elapsed_ms") is not None:
                host = urlsplit(step.request["url"]).hostname or "?"
                metrics.OUTBOUND.labels(host, f"{step.response['status'] // 100}xx").observe(
                    step.response["elapsed_ms"] / 1000)
            if step.retry_at is not None:
                metrics.RETRIES.labels(flow_id, step.path).inc()
            log.info("step %s %s (attempt %d)%s", step.path, step.status.value, step.attempt,
                     f": {step.error_message}" if step.error_message else "",
                     extra={"run_id": run_id, "flow": flow_id, "step": step.path})
        if result.status.terminal:
            metrics.RUNS.labels(flow_id, result.status.value).inc()
        elif result.deferred_origin is not None:
            metrics.DEFERRED.labels(flow_id, result.deferred_origin).inc()
        log.info("run %s of %s: %s%s", run_id, flow_id, result.status.value,
                 f" ({result.error})" if result.error else "", extra={"run_id": run_id, "flow": flow_id})

    def reap(self, now: float | None = None) -> list[int]:
        """Enqueue runs whose lease expired, whose retry is overdue, or that sat queued too long."""
        now = time.time() if now is None else now
        grace = self.settings.queued_grace_s
        if self.pending is not None:
            try:
                if self.pending() > 0:
                    grace = max(grace * 30, 300.0)  # a busy queue is not a lost queue
            except Exception:  # noqa: BLE001 - queue down: treat as empty, enqueue will fail and be retried
                pass
        requeue_after = max(self.settings.queued_grace_s, 2 * self.settings.reaper_interval_s)
        ids = self.store.due_runs(now, grace, requeue_after)
        for run_id in ids:
            self._enqueue(run_id, 0.0)
        if ids:
            log.info("reaper re-enqueued %d run(s)", len(ids))
        self._carry_on_jobs(now)
        return ids

    def _carry_on_jobs(self, now: float) -> None:
        """Bulk jobs whose web process died mid-way are finished by a worker's reaper: every job ends."""
        from engine import bulk

        for job_id in self.store.stalled_jobs(now - bulk.STALLED_S):
            log.info("reaper carries on bulk job %s", job_id)
            bulk.run(self, job_id)

    def prune(self, now: float | None = None, progress: Callable[[int], None] | None = None) -> int:
        """Apply HOOKLINE_RETENTION_SUCCEEDED / _FAILED (days); returns how many runs were deleted."""
        now = time.time() if now is None else now
        total = 0
        for count in self.store.prune(succeeded_before=now - self.settings.retention_succeeded * 86400,
                                      failed_before=now - self.settings.retention_failed * 86400):
            total += count
            if progress is not None:
                progress(total)
        self.store.reclaim_space()
        if total:
            log.info("pruned %d runs past retention", total)
        return total

    # --- operator actions -------------------------------------------------------------------------

    def replay(self, run_id: int, *, original_version: bool = False) -> int:
        """A new run on the same event: the current flow version, or the one the run used."""
        detail = self._detail(run_id)
        version = detail.run.flow_version if original_version else self.current_version(detail.run.flow_id)
        new_id = self.store.create_linked_run(run_id, "replay", version)
        self._enqueue(new_id, 0.0)
        return new_id

    def retry_from_failed(self, run_id: int, *, original_version: bool = True) -> int:
        """A new run that keeps what the parent finished for good (store.replay.kept) and runs the rest again.

        On the current version only records of steps still there unchanged are kept (engine.versions); a
        kept call that changed, moved or was renamed refuses the retry (StepChanged) rather than send it twice.
        """
        from engine import bulk

        record = self.store.get_run_record(run_id)
        if record is None:
            raise RunNotFound(run_id)
        if record.status is not RunStatus.FAILED:
            raise NotRetryable(run_id, record.status.value)
        version = record.flow_version
        if not original_version:
            version = self.current_version(record.flow_id, "retry on the original version instead")
            bulk.check_retry(self, record, version)
        new_id = self.store.create_linked_run(run_id, "retry", version, keep_done=True,
                                              keep=None if original_version else bulk.keeper(self))
        self._enqueue(new_id, 0.0)
        return new_id

    def dry_run(self, run_id: int) -> RunResult:
        """What the current flow version would send for this run's event, without sending anything.

        Calls the run made answer as they answered then (its last recorded response per path), so a
        flow that branches on a response is followed as far as the run went; other calls get placeholders.
        """
        from engine.flowtest import stubs_from

        detail = self._detail(run_id)
        flow = self.catalog.get(detail.run.flow_id)
        if not isinstance(flow, Flow):
            raise FlowNotLoaded(detail.run.flow_id, "nothing to dry-run")
        info = RunInfo(id=detail.run.id, flow=flow.id, received_at=_iso(detail.event.received_at))
        return run_flow(flow, make_event(detail.event, flow.trigger), run=info, env=self.env, dry_run=True,
                        options=self.options, stubs=stubs_from(detail.steps))

    def _detail(self, run_id: int) -> RunDetail:
        detail = self.store.get_run(run_id)
        if detail is None:
            raise RunNotFound(run_id)
        return detail

    def current_version(self, flow_id: str, remedy: str = "replay on the original version instead") -> str:
        flow = self.catalog.get(flow_id)
        if not isinstance(flow, Flow):
            raise FlowNotLoaded(flow_id, remedy)
        self.store.save_flow_version(flow.id, flow.version, flow.source, flow.path)
        return flow.version

    bulk_chunk = 100
    """Runs a bulk job creates per transaction (engine.bulk), and how many a page waits for before it
    answers; tests make it small to watch the progress."""


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"

