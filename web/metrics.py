"""GET /metrics in Prometheus text format: this machine's processes (multiprocess mode) plus shared
state read at scrape time: queue depth, unfinished runs by status, destination circuits."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from web.hooks import service

bp = Blueprint("metrics", __name__)


class StateCollector(Collector):
    """Gauges computed from the store and the queue when scraped (cheap: index-only counts)."""

    def collect(self) -> Iterator[Any]:
        svc = service()
        depth = GaugeMetricFamily("hookline_queue_depth", "Tasks waiting in the Huey queue.")
        if svc.pending is not None:
            try:
                depth.add_metric([], svc.pending())
            except Exception:  # noqa: BLE001 - queue down: no sample rather than a failed scrape
                pass
        yield depth
        unfinished = GaugeMetricFamily("hookline_runs_unfinished", "Runs not yet terminal, by status.",
                                       labels=["status"])
        breaker = GaugeMetricFamily("hookline_destination_circuit_open", "1 when an origin's circuit is open.",
                                    labels=["origin"])
        try:
            for status, count in svc.store.unfinished_counts().items():
                unfinished.add_metric([status], count)
            for dest in svc.store.destinations():
                breaker.add_metric([dest.origin], 1.0 if dest.state != "closed" else 0.0)
        except Exception:  # noqa: BLE001 - database down: /readyz says so; keep the scrape working
            pass
        yield unfinished
        yield breaker


@bp.route("/metrics")
def metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        for collector in list(REGISTRY._collector_to_names):  # this process's own metrics
            registry.register(collector)
    registry.register(StateCollector())
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
