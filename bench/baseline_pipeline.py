"""A hand-written Flask + Huey pipeline doing the bench flows' work with one row per event.

Ingress verifies the Stripe signature (by hand), inserts one row (unique event id: dedupe) and
enqueues its id; the task reads the row, filters, transforms, makes the flow's POST(s) on a pooled
httpx.Client and marks the row done with one UPDATE. That is 2 commits per event, where the engine
records every step (I7). Web: ``bench.baseline_pipeline:create_app()`` under gunicorn; worker:
``python -m bench.baseline_pipeline`` (same consumer options and log level as `hookline worker`).
Environment: BENCH_DB_URL, BENCH_REDIS_URL or BENCH_QUEUE_PATH, BENCH_SECRET, TARGET_URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from typing import Any

import httpx
from flask import Flask, jsonify, request
from sqlalchemy import Column, Float, Integer, LargeBinary, MetaData, String, Table, select, update
from sqlalchemy.exc import IntegrityError

from bench.baseline_ingest import hook_app, make_db, make_huey

log = logging.getLogger("baseline")
metadata = MetaData()
events = Table(
    "bench_pipeline_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(200), unique=True),
    Column("flow", String(100)),
    Column("status", String(16)),
    Column("received_at", Float),
    Column("finished_at", Float),
    Column("body", LargeBinary),
)

huey = make_huey("baseline-pipeline")
_db = None
_http = None


def db() -> Any:
    global _db
    if _db is None:
        _db = make_db(os.environ["BENCH_DB_URL"])
    return _db


def http() -> httpx.Client:
    global _http
    if _http is None:  # same pool settings as engine/service.py:make_http_client
        _http = httpx.Client(timeout=httpx.Timeout(10.0), limits=httpx.Limits(max_connections=100,
                             max_keepalive_connections=20), headers={"User-Agent": "baseline/0.1"})
    return _http


def verify_stripe(body: bytes, header: str, secret: str, tolerance: int = 300) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(time.time() - ts) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


def key(event_id: str, step: str) -> str:
    return hashlib.sha256(f"baseline:{event_id}:{step}".encode()).hexdigest()[:32]


@huey.task()
def process(row_id: int) -> None:
    with db().begin() as conn:
        row = conn.execute(select(events.c.flow, events.c.body).where(events.c.id == row_id)).one()
    ev = json.loads(row.body)
    status = "filtered"
    if ev.get("type") == "payment_intent.succeeded":
        obj = ev["data"]["object"]
        payment = {"customer": obj["customer"], "email": obj["receipt_email"].lower(), "amount": obj["amount"] / 100,
                   "currency": obj["currency"].upper()}
        base = os.environ["TARGET_URL"]
        if row.flow == "bench_one":
            http().post(f"{base}/one", json={"external_id": payment["customer"], "email": payment["email"],
                                             "amount": payment["amount"], "currency": payment["currency"]},
                        headers={"Idempotency-Key": key(ev["id"], "notify")}).raise_for_status()
        else:
            crm = http().post(f"{base}/crm/contacts", json={"email": payment["email"], "external_id": payment["customer"]},
                              headers={"Authorization": "Bearer demo", "Idempotency-Key": key(ev["id"], "crm")})
            crm.raise_for_status()
            if payment["amount"] > 0:
                http().post(f"{base}/acct/invoices", json={"contact_id": crm.json()["id"], "amount": payment["amount"],
                                                           "currency": payment["currency"]},
                            headers={"Idempotency-Key": key(ev["id"], "invoice")}).raise_for_status()
        status = "succeeded"
    with db().begin() as conn:
        conn.execute(update(events).where(events.c.id == row_id).values(status=status, finished_at=time.time()))
    log.info("event %s: %s", ev.get("id"), status)


def create_app() -> Flask:
    secret = os.environ["BENCH_SECRET"]

    def receive(flow: str, body: bytes) -> Any:
        if not verify_stripe(body, request.headers.get("Stripe-Signature", ""), secret):
            return jsonify({"ok": False, "error": "bad signature"}), 401
        event_id = json.loads(body)["id"]
        try:
            with db().begin() as conn:
                row_id = conn.execute(events.insert().values(event_id=event_id, flow=flow, status="queued",
                                                             received_at=time.time(), body=body)).inserted_primary_key[0]
        except IntegrityError:
            return jsonify({"ok": True, "duplicate": True}), 200
        process(row_id)
        return jsonify({"ok": True, "id": row_id}), 202

    return hook_app(receive)


def main() -> None:
    """The consumer, configured like `hookline worker` (engine/app/processes.py:_run_consumer, engine/logs.py)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("huey").setLevel(logging.WARNING)
    metadata.create_all(db())
    workers = int(os.environ.get("BENCH_WORKER_THREADS", "4"))
    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=False, initial_delay=0.02,
                                    backoff=1.2, max_delay=0.5, check_worker_health=True)
    consumer.run()


if __name__ == "__main__":
    # run as bench.baseline_pipeline (not __main__) so the task names match what the web app enqueued
    import bench.baseline_pipeline as module

    module.main()
