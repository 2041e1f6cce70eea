"""Prometheus metrics, multiprocess-safe: set PROMETHEUS_MULTIPROC_DIR (``hookline web`` and
``hookline worker`` do) to the same directory for every process of a machine and /metrics shows them all.

Counters and histograms are updated where things happen (ingress, service); gauges that describe
shared state (queue depth, unfinished runs, open circuits) are read from the store at scrape time.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOKS = Counter("hookline_webhooks_received_total", "Webhooks received, by flow.", ["flow"])
REJECTED = Counter("hookline_webhooks_rejected_total", "Webhooks refused, by flow and reason.", ["flow", "reason"])
DUPLICATES = Counter("hookline_webhooks_duplicate_total", "Webhooks answered as duplicates, by flow.", ["flow"])
RUNS = Counter("hookline_runs_finished_total", "Runs that reached a terminal status.", ["flow", "status"])
STEPS = Histogram("hookline_step_duration_seconds", "Duration of step attempts.", ["flow", "type", "status"],
                  buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
OUTBOUND = Histogram("hookline_outbound_duration_seconds", "Outbound HTTP call duration by host and status class.",
                     ["host", "status"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RETRIES = Counter("hookline_step_retries_total", "Step attempts that failed and were scheduled again.", ["flow", "step"])
DEFERRED = Counter("hookline_steps_deferred_total", "Steps held back by destination protection.", ["flow", "origin"])
ALERTS = Counter("hookline_alerts_total", "Alert decisions for runs that failed for good (HOOKLINE_ALERT_URL), by outcome.",
                 ["outcome"])
