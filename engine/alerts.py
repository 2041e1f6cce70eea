"""Alerts without a dashboard: HOOKLINE_ALERT_URL hears once about each run that fails for good.

A run "fails for good" when it is closed ``failed`` (not ``waiting`` for a retry). The decision is
taken once per run in the database (engine.store.alerts): a worker killed after closing the run and
the run resumed elsewhere never alerts twice, whatever the number of processes and machines. A flow
alerts at most once per HOOKLINE_ALERT_INTERVAL_S; the failures in between are counted, not sent, and
the next alert says how many there were (as Alertmanager groups, without its own state to keep).

Delivery happens after the run is closed, on the service's HTTP client (the pinned transport and its
SSRF rules), signed or authenticated by HOOKLINE_ALERT_CONNECTION when set. It is best effort and
bounded: a few attempts within ALERT_BUDGET_S, then a log line and ``hookline_alerts_total{outcome="failed"}``.
Nothing here ever changes or fails the run.

The text sent is the run record's error, which the runner has already redacted: no secret leaves.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from engine.config import Settings
from engine.connections import ConnectionFailed, Outbound
from engine.connections.runtime import ConnectionRuntime
from engine.errors import SettingsError
from engine.model import RunResult, StepStatus
from engine.templating import RenderContext, clean_text

log = logging.getLogger("hookline.alerts")

FORMATS = ("json", "slack")
ATTEMPTS = 3
ATTEMPT_TIMEOUT_S = 5.0
ALERT_BUDGET_S = 12.0  # the longest a worker thread spends on one alert, all attempts together
BACKOFF_S = (0.5, 2.0)  # pause before the 2nd and 3rd attempt
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class AlertDecision:
    """What the flow's rate limit decided for one failed run.

    ``suppressed``: when sent, how many failures of the flow were not alerted since its last alert;
    when not sent, how many are now waiting to be counted in the next one.
    """

    send: bool
    suppressed: int


class AlertLedger(Protocol):
    """Where decisions are kept for every worker (engine.store.alerts.AlertStore)."""

    def claim_alert(self, run_id: int, flow_id: str, interval: float, now: float | None = None) -> AlertDecision | None:
        """Decide once per run; None when this run was decided before (by this or another worker)."""
        ...


def due(last_sent_at: float | None, now: float, interval: float) -> bool:
    """Whether a flow that last alerted at ``last_sent_at`` may alert again at ``now``."""
    return last_sent_at is None or now - last_sent_at >= interval


@dataclass(frozen=True)
class Alert:
    """The facts of one alert, the same in every format."""

    flow: str
    run_id: int
    run_url: str
    step: str | None
    error: str
    failed_at: float
    suppressed: int

    def document(self, fmt: str) -> dict[str, Any]:
        """The JSON body sent: the facts (``json``) or a Slack incoming-webhook message (``slack``)."""
        if fmt == "slack":
            return {"text": self.slack_text()}
        return {"event": "run.failed", "flow": self.flow, "run_id": self.run_id, "run_url": self.run_url,
                "step": self.step, "error": self.error, "failed_at": _iso(self.failed_at),
                "suppressed": self.suppressed}

    def slack_text(self) -> str:
        where = f" at step `{_slack(self.step)}`" if self.step else ""
        link = f"<{self.run_url}|run {self.run_id}>" if _absolute(self.run_url) else f"run {self.run_id} ({self.run_url})"
        text = f":rotating_light: Hookline: {link} of flow `{_slack(self.flow)}` failed{where}\n>{_slack(self.error)}"
        if self.suppressed:
            more = "failure" if self.suppressed == 1 else "failures"
            text += f"\n{self.suppressed} more {more} of this flow since the last alert (not alerted one by one)"
        return text


def failed_step(result: RunResult) -> str | None:
    """The path of the step that failed the run, from the run's error (``step <path>: ...``).

    The error names it whenever a step failed the run, including a failure an earlier attempt recorded
    (the resumed run raises it again without a new step row); a step row of that path confirms it.
    """
    error = result.error or ""
    if not error.startswith("step "):
        return None
    failed = [s.path for s in result.steps if s.status is StepStatus.FAILED and error.startswith(f"step {s.path}: ")]
    if failed:
        return max(failed, key=len)
    return error[len("step "):].split(": ", 1)[0] or None


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _absolute(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


def _slack(text: str) -> str:
    """Slack's mrkdwn escapes: a flow's error text cannot turn into a link or a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def check_settings(settings: Settings) -> None:
    """SettingsError for an alert setting that cannot work, at start-up rather than at the first failure."""
    if not settings.alert_url:
        return
    parts = urlsplit(settings.alert_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # not the value: a Slack-style webhook URL is a secret (I9); its scheme says enough to find the typo
        got = f"scheme {parts.scheme[:20]!r}" if parts.scheme else "no scheme"
        raise SettingsError(f"HOOKLINE_ALERT_URL: expected an http(s) URL with a host, got {got}"
                            + ("" if parts.hostname else " and no host"))
    if settings.alert_format.strip().lower() not in FORMATS:
        raise SettingsError(f"HOOKLINE_ALERT_FORMAT: expected json or slack, got {settings.alert_format!r}")


class Alerter:
    """Decides (through the ledger) and delivers the alert of a run that failed for good."""

    def __init__(self, settings: Settings, ledger: AlertLedger, http: httpx.Client,
                 connections: ConnectionRuntime | None = None, env: Mapping[str, str] | None = None, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        check_settings(settings)
        self.url = settings.alert_url
        self.format = settings.alert_format.strip().lower()
        self.connection = settings.alert_connection or None
        self.interval = settings.alert_interval_s
        self.public_url = settings.public_url.rstrip("/")
        self.ledger, self.http, self.connections = ledger, http, connections
        self.env: Mapping[str, str] = env or {}
        self.clock, self.sleep = clock, sleep

    def run_failed(self, run_id: int, flow_id: str, result: RunResult) -> str | None:
        """Alert about a closed, failed run unless it was decided before; returns the outcome counted.

        ``sent``, ``suppressed`` (the flow alerted within the interval), ``failed`` (the endpoint or
        the database did not answer), or None (no alert URL, or another worker decided this run).
        Never raises: the run is closed and stays as it is.
        """
        if not self.url:
            return None
        try:
            return self._decide_and_send(run_id, flow_id, result)
        except Exception as exc:  # noqa: BLE001 - the database or a bug: never the worker's problem, the run is closed
            log.warning("alert for run %s of %s not sent: %s", run_id, flow_id, exc,
                        extra={"run_id": run_id, "flow": flow_id})
            return _count("failed")

    def _decide_and_send(self, run_id: int, flow_id: str, result: RunResult) -> str | None:
        decision = self.ledger.claim_alert(run_id, flow_id, self.interval, self.clock())
        if decision is None:
            return None
        if not decision.send:
            log.info("alert for run %s of %s suppressed (%d since the flow's last alert)", run_id, flow_id,
                     decision.suppressed, extra={"run_id": run_id, "flow": flow_id})
            return _count("suppressed")
        alert = Alert(flow=flow_id, run_id=run_id, run_url=f"{self.public_url}/runs/{run_id}",
                      step=failed_step(result), error=clean_text(result.error or "failed")[:MAX_ERROR_CHARS],
                      failed_at=self.clock(), suppressed=decision.suppressed)
        problem = self.deliver(alert)
        if problem is None:
            log.info("alert for run %s of %s sent", run_id, flow_id, extra={"run_id": run_id, "flow": flow_id})
            return _count("sent")
        log.warning("alert for run %s of %s not delivered: %s", run_id, flow_id, problem,
                    extra={"run_id": run_id, "flow": flow_id})
        return _count("failed")

    def deliver(self, alert: Alert) -> str | None:
        """POST the alert, a few times within ALERT_BUDGET_S; None when delivered, else why not (no secret in it)."""
        content = json.dumps(alert.document(self.format), ensure_ascii=False).encode()
        deadline = self.clock() + ALERT_BUDGET_S
        problem: str | None = "not attempted"
        for attempt in range(ATTEMPTS):
            if attempt:
                pause = BACKOFF_S[min(attempt, len(BACKOFF_S)) - 1]
                if self.clock() + pause >= deadline:
                    break
                self.sleep(pause)
            timeout = min(ATTEMPT_TIMEOUT_S, deadline - self.clock())
            if timeout <= 0:
                break
            problem, retry = self._attempt(alert.run_id, content, timeout)
            if not retry:
                break
        return problem

    def _attempt(self, run_id: int, content: bytes, timeout: float) -> tuple[str | None, bool]:
        """One POST; (problem or None, whether another attempt may help)."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"hookline-alert-{run_id}"}
        send: Callable[..., httpx.Response] = self.http.request
        if self.connection is not None:
            try:
                if self.connections is None:
                    raise ConnectionFailed(f"connection {self.connection}: connections are not available here")
                request = Outbound("POST", self.url, headers, {}, content, f"hookline-alert-{run_id}")
                prepared = self.connections.prepare(self.connection, request, RenderContext({}, self.env), self.http)
            except ConnectionFailed as exc:
                return exc.message, exc.retryable
            headers, send = prepared.request.headers, prepared.sender(self.http)
            params = prepared.request.params or None
        else:
            params = None
        try:
            response = send("POST", self.url, params=params, headers=headers, content=content, timeout=timeout)
        except ConnectionFailed as exc:  # an OAuth2 token refreshed after a 401
            return exc.message, exc.retryable
        except httpx.TimeoutException:
            return f"timed out after {timeout:.1f}s", True
        except httpx.HTTPError as exc:
            return f"connection failed: {exc or type(exc).__name__}", True
        response.close()
        if 200 <= response.status_code < 300:
            return None, False
        status = response.status_code
        return f"answered {status} {response.reason_phrase}".rstrip(), status >= 500 or status in (408, 429)


def _count(outcome: str) -> str:
    from engine import metrics

    metrics.ALERTS.labels(outcome).inc()
    return outcome
