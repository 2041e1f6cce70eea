"""Engine overhead per step, in-process: run_flow and Service.execute_run vs the bare equivalent Python.

The outbound call goes to an httpx.MockTransport, so only the engine's own work is timed:
* ``runner``: engine.runner.run_flow (templating, step dispatch, results, redaction) with no recorder;
* ``service+sqlite`` / ``service+postgres``: Service.execute_run on a real store (claim, one commit
  per call, outcome): the per-step cost a worker pays, database included;
* ``bare``: the same filter/transform/POST written by hand on the same client.
Overhead per step = (engine - bare) / steps, in wall time (what a run waits, commits included) and in
this process's CPU time (what the engine computes; a PostgreSQL commit's WAL flush is not in it).
A pyinstrument profile of the service loop is saved next to the results, and its heaviest frames
are kept in the JSON.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import SECRET, log, make_backend, stripe_event, summary, write_flows

# An IP literal, like the e2e target: a host name would add a getaddrinfo per call (engine/steps/http.py
# _refuse_link_local), reported separately as "dns_check".
BASE = "http://127.0.0.1:9"


def _client() -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        body = request.content
        tag = json.loads(body).get("external_id", "x") if body else "x"
        return httpx.Response(200, json={"id": tag})

    return httpx.Client(transport=httpx.MockTransport(answer), headers={"User-Agent": "bench"})


def _bare(client: httpx.Client, ev: dict[str, Any], flow: str) -> None:
    if ev["type"] != "payment_intent.succeeded":
        return
    obj = ev["data"]["object"]
    payment = {"customer": obj["customer"], "email": obj["receipt_email"].lower(), "amount": obj["amount"] / 100,
               "currency": obj["currency"].upper()}
    if flow == "bench_one":
        client.post(f"{BASE}/one", json={"external_id": payment["customer"], "email": payment["email"],
                                          "amount": payment["amount"], "currency": payment["currency"]},
                    headers={"Idempotency-Key": "k1"}).raise_for_status()
        return
    crm = client.post(f"{BASE}/crm/contacts", json={"email": payment["email"], "external_id": payment["customer"]},
                      headers={"Authorization": "Bearer demo", "Idempotency-Key": "k1"})
    crm.raise_for_status()
    if payment["amount"] > 0:
        client.post(f"{BASE}/acct/invoices", json={"contact_id": crm.json()["id"], "amount": payment["amount"],
                                                    "currency": payment["currency"]},
                    headers={"Idempotency-Key": "k2"}).raise_for_status()


def _timeit(fn: Any, n: int) -> float:
    """Median of 5 batches, ms per call; each call gets its own index (a run executes once)."""
    per = []
    batch = max(1, n // 5)
    for b in range(5):
        t0 = time.perf_counter()
        for i in range(b * batch, (b + 1) * batch):
            fn(i)
        per.append((time.perf_counter() - t0) / batch * 1000)
    return float(sorted(per)[2])


def run(cfg: Any, logdir: Path) -> dict[str, Any]:
    from engine.catalog import FlowCatalog
    from engine.config import Settings
    from engine.events import make_event
    from engine.loader import load_flow_file
    from engine.model import EventRecord, RunInfo
    from engine.runner import run_flow
    from engine.service import Service
    from engine.steps import RunOptions
    from engine.store import RunStore

    env = {"STRIPE_WEBHOOK_SECRET": SECRET, "TARGET_URL": BASE, "CRM_URL": f"{BASE}/crm",
           "ACCOUNTING_URL": f"{BASE}/acct"}
    os.environ.update(env)
    n = cfg.micro_iterations
    out: dict[str, Any] = {"iterations": n}
    client = _client()
    for flow_name in ("bench_one", "stripe_payment_sync"):
        backend = make_backend("sqlite")
        try:
            flows = backend.tmp / "flows"
            write_flows(flows)
            flow = load_flow_file(flows / f"{flow_name}.yaml")
            steps = len(flow.steps)
            events = [stripe_event(i, time.time(), "micro") for i in range(n)]
            raws = [json.dumps(e).encode() for e in events]
            records = [EventRecord(id=i, flow_id=flow.id, received_at=time.time(), method="POST", query="",
                                   headers=[("Content-Type", "application/json")], body=raws[i],
                                   content_type="application/json") for i in range(n)]
            options = RunOptions()

            def engine_run(i: int, flow: Any = flow, records: Any = records, options: Any = options) -> None:
                res = run_flow(flow, make_event(records[i]), http=client, run=RunInfo(id=i, flow=flow.id), env=env,
                               options=options)
                assert res.status.value == "succeeded", res.error

            def bare_run(i: int, raws: list[bytes] = raws, flow_name: str = flow_name) -> None:
                _bare(client, json.loads(raws[i]), flow_name)

            bare = _timeit(bare_run, n)
            runner = _timeit(engine_run, n)
            row: dict[str, Any] = {"steps": steps, "bare_ms": bare, "runner_ms": runner,
                                   "runner_overhead_per_step_ms": (runner - bare) / steps}
            for kind in cfg.micro_backends:
                b2 = backend if kind == "sqlite" else make_backend(kind)
                try:
                    store = RunStore(b2.db_url)
                    settings = Settings(database_url=b2.db_url, flows_dir=str(flows))
                    svc = Service(settings, store, FlowCatalog(flows), enqueue=lambda *_: None, http=client, env=env)
                    ids = [store.accept(flow_id=flow.id, version=flow.version, source=flow.source, path=flow.path,
                                        method="POST", query="", headers=[("Content-Type", "application/json")],
                                        body=raws[i], content_type="application/json", dedupe_key=f"{kind}{i}").run_id
                           for i in range(n)]

                    def service_run(i: int, ids: list[int] = ids, svc: Service = svc) -> None:
                        status = svc.execute_run(ids[i])
                        assert status is not None and status.value == "succeeded", status

                    cpu0 = time.process_time()
                    per_run = _timeit(service_run, n)
                    cpu = (time.process_time() - cpu0) / (5 * max(1, n // 5)) * 1000  # this process only
                    row[f"service_{kind}_ms"] = per_run
                    row[f"service_{kind}_cpu_overhead_per_step_ms"] = (cpu - bare) / steps
                    row[f"commits_per_run_{kind}"] = _commits(store, svc, flow, raws[0])
                    row[f"service_{kind}_overhead_per_step_ms"] = (per_run - bare) / steps
                    if kind == "sqlite" and flow_name == "bench_one":
                        out["profile"] = _profile(store, svc, flow, raws, logdir)
                    store.dispose()
                finally:
                    if b2 is not backend:
                        b2.cleanup()
            out[flow_name] = row
            log(f"  {flow_name:20} bare {bare:.2f} ms, run_flow {runner:.2f} ms "
                f"({row['runner_overhead_per_step_ms']:.2f} ms/step), "
                + ", ".join(f"execute_run on {k} {row[f'service_{k}_ms']:.2f} ms "
                            f"({row[f'service_{k}_overhead_per_step_ms']:.2f} ms/step, CPU "
                            f"{row[f'service_{k}_cpu_overhead_per_step_ms']:.2f})" for k in cfg.micro_backends))
        finally:
            backend.cleanup()
    client.close()
    return out


def _commits(store: Any, svc: Any, flow: Any, raw: bytes) -> dict[str, int]:
    """Database transactions committed by accepting one event and by executing its run."""
    from sqlalchemy import event

    count = [0]

    def on_commit(_conn: Any) -> None:
        count[0] += 1

    event.listen(store.engine, "commit", on_commit)
    try:
        accepted = store.accept(flow_id=flow.id, version=flow.version, source=flow.source, path=flow.path,
                                method="POST", query="", headers=[], body=raw, content_type="application/json",
                                dedupe_key="commits")
        ingest = count[0]
        svc.execute_run(accepted.run_id)
        return {"accept": ingest, "execute_run": count[0] - ingest}
    finally:
        event.remove(store.engine, "commit", on_commit)


def _profile(store: Any, svc: Any, flow: Any, raws: list[bytes], logdir: Path) -> dict[str, Any]:
    """pyinstrument over execute_run on SQLite; the HTML goes to the log dir, the top frames into the JSON."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return {"skipped": "pyinstrument not installed"}
    ids = [store.accept(flow_id=flow.id, version=flow.version, source=flow.source, path=flow.path, method="POST",
                        query="", headers=[], body=raws[i % len(raws)], content_type="application/json",
                        dedupe_key=f"prof{i}").run_id for i in range(300)]
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for run_id in ids:
        svc.execute_run(run_id)
    profiler.stop()
    (logdir / "execute_run.pyinstrument.html").write_text(profiler.output_html())
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    (logdir / "execute_run.pyinstrument.txt").write_text(text)
    return {"html": str(logdir / "execute_run.pyinstrument.html"), "by_function": _top_functions(profiler.last_session)}


def _top_functions(session: Any, limit: int = 25) -> list[tuple[str, float]]:
    """Inclusive time per function (share of the total), from the pyinstrument frame tree."""
    root = session.root_frame()
    if root is None:
        return []
    total = root.time or 1.0
    acc: dict[str, float] = {}

    def walk(frame: Any, seen: frozenset[str]) -> None:
        key = f"{frame.function} ({Path(frame.file_path or '?').name}:{frame.line_no})"
        name = f"{Path(frame.file_path or '?').parent.name}/{Path(frame.file_path or '?').name}:{frame.function}"
        if name not in seen:
            acc[name] = acc.get(name, 0.0) + frame.time
        del key
        for child in frame.children:
            walk(child, seen | {name})

    walk(root, frozenset())
    return [(k, round(v / total, 3)) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])[:limit]]


__all__ = ["run", "summary"]
