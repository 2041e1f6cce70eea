"""Turn a results JSON into the Markdown table printed by ``make bench`` and pasted into docs/benchmarks.md.

``python -m bench.report bench/results/<date>.json`` re-renders a saved run.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _g(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _n(v: Any, digits: int = 0, unit: str = "") -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}{unit}"


def _spread(s: Any, digits: int = 0) -> str:
    """``median (min–max)`` of a bench.common.summary."""
    if not isinstance(s, dict) or s.get("median") is None:
        return "-"
    if s["min"] == s["max"]:
        return _n(s["median"], digits)
    return f"{_n(s['median'], digits)} ({_n(s['min'], digits)}–{_n(s['max'], digits)})"


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue #5 with the measured value and whether it is met (None: not measured)."""
    s = r.get("sections", {})
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, goal: str, met: bool | None) -> None:
        out.append({"target": name, "value": value, "goal": goal, "met": met})

    for kind in ("sqlite", "postgres"):
        ratio = _g(s, "ingest", kind, "ratio")
        add(f"ingest {kind} vs baseline", ratio, ">= 0.75", None if ratio is None else ratio >= 0.75)
    p99 = _g(s, "ingest", "sqlite_fixed_rate", "engine", "p99_ms", "median")
    raw = _g(s, "ingest", "sqlite_fixed_rate", "engine", "raw") or []
    kept_up = all(not r.get("unsent") and r.get("ok") == r.get("requests") for r in raw)
    add("p99 ack @500 req/s sqlite (ms), every request answered", p99, "< 50",
        None if p99 is None else (p99 < 50 and kept_up))
    ratio = _g(s, "e2e", "one", "ratio")
    add("end to end one-call vs pipeline", ratio, ">= 0.60", None if ratio is None else ratio >= 0.60)
    for key, label in (("runner_overhead_per_step_ms", "runner"), ("service_sqlite_overhead_per_step_ms",
                                                                   "execute_run sqlite"),
                       ("service_postgres_overhead_per_step_ms", "execute_run postgres")):
        v = _g(s, "micro", "bench_one", key)
        add(f"engine overhead per step, {label} (ms)", v, "< 2", None if v is None else v < 2)
    for kind in ("sqlite", "postgres"):
        b = _g(s, "burst", kind, "engine")
        if b:
            add(f"burst {kind}: drained, no error, nothing lost", b.get("ok"), "true", bool(b.get("ok")))
            add(f"burst {kind}: web worker peak RSS (MB)", b.get("web_worker_peak_rss_mb"), "< 80",
                b.get("web_worker_peak_rss_mb", 1e9) < 80)
            add(f"burst {kind}: worker peak RSS (MB)", b.get("worker_peak_rss_mb"), "< 100",
                b.get("worker_peak_rss_mb", 1e9) < 100)
    for kind in ("sqlite", "postgres"):
        page = _g(s, "runs_page", kind)
        if not isinstance(page, dict):
            continue
        for name, res in page.items():
            if isinstance(res, dict) and "error" in res:
                add(f"runs page {kind} {name}", "error", "answers 200", False)
                continue
            if not isinstance(res, dict) or "median_ms" not in res:
                continue
            if name.startswith("store.") and _has_route_twin(page, name):
                continue
            add(f"runs page {kind} {name} median (ms)", res["median_ms"], "< 150", res["median_ms"] < 150)
            add(f"runs page {kind} {name} p95 (ms)", res["p95_ms"], "< 300", res["p95_ms"] < 300)
    peers = s.get("peers")
    if isinstance(peers, dict) and "runs" in peers:
        from bench.peers_report import peers_targets

        out += peers_targets(peers)
    return out


def _has_route_twin(page: dict[str, Any], store_name: str) -> bool:
    twins = {"store.list_runs()": "/runs", "store.get_run(id)": "/runs/<id>",
             "store.list_runs(q=<dedupe key>)": "/api/runs?q=<dedupe key>",
             "store.list_runs(q=order_id:<v>)": "/api/runs?q=order_id:<v>"}
    twin = twins.get(store_name)
    if store_name.startswith("store.list_runs(status=failed"):
        twin = "/runs?status=failed&flow="
    return twin is not None and twin in page


def render_table(r: dict[str, Any]) -> str:
    s = r.get("sections", {})
    lines = ["| Measurement | Hookline | Baseline | Ratio | Target |", "|---|---|---|---|---|"]

    def row(name: str, a: str, b: str, ratio: Any = None, goal: str = "") -> None:
        lines.append(f"| {name} | {a} | {b} | {'-' if ratio is None else f'{ratio:.2f}'} | {goal} |")

    ing = s.get("ingest", {})
    for kind in ("sqlite", "postgres"):
        d = ing.get(kind)
        if isinstance(d, dict) and "engine" in d:
            e, b = d["engine"], d["baseline"]
            row(f"Ingest {kind}, req/s", _spread(e["rps"]), _spread(b["rps"]), d.get("ratio"), ">= 0.75")
            row(f"Ingest {kind}, ack p50 / p99 ms (saturated)",
                f"{_n(e['p50_ms']['median'], 1)} / {_n(e['p99_ms']['median'], 1)}",
                f"{_n(b['p50_ms']['median'], 1)} / {_n(b['p99_ms']['median'], 1)}")
    d = ing.get("sqlite_fixed_rate")
    if isinstance(d, dict) and "engine" in d:
        def rate_cell(side: dict[str, Any]) -> str:
            unsent = sum(r.get("unsent", 0) for r in side["raw"])
            got = f"{_n(side['rps']['median'])} req/s answered"
            return f"{_spread(side['p99_ms'], 1)} ({got}" + (f", {unsent} not sent in time)" if unsent else ")")

        row(f"Ingest sqlite @{d['rate']:.0f} req/s offered, ack p99 ms", rate_cell(d["engine"]), rate_cell(d["baseline"]),
            None, "< 50")
    e2e = s.get("e2e", {})
    for flow, label in (("one", "one-call flow"), ("stripe", "Stripe example (2 POSTs)")):
        d = e2e.get(flow)
        if isinstance(d, dict) and "engine" in d:
            e, b = d["engine"], d["baseline"]
            row(f"End to end {label}, runs/s ({e2e.get('backend')})", _spread(e["runs_per_s"], 1),
                _spread(b["runs_per_s"], 1), d.get("ratio"), ">= 0.60" if flow == "one" else "")
            row(f"End to end {label}, receipt->last call p50 / p99 ms @{d['latency_rate']:.0f}/s",
                f"{_n(e['p50_ms']['median'])} / {_n(e['p99_ms']['median'])}",
                f"{_n(b['p50_ms']['median'])} / {_n(b['p99_ms']['median'])}")
    if isinstance(e2e, dict) and e2e.get("target_ceiling_rps"):
        row("Target server ceiling, req/s", _n(e2e["target_ceiling_rps"]), "", None, "")
    micro = s.get("micro", {})
    for flow in ("bench_one", "stripe_payment_sync"):
        d = micro.get(flow)
        if isinstance(d, dict):
            parts = [f"run_flow {_n(d['runner_overhead_per_step_ms'], 2)}"]
            for kind in ("sqlite", "postgres"):
                if f"service_{kind}_overhead_per_step_ms" in d:
                    cpu = d.get(f"service_{kind}_cpu_overhead_per_step_ms")
                    parts.append(f"execute_run/{kind} {_n(d[f'service_{kind}_overhead_per_step_ms'], 2)}"
                                 + (f" (CPU {_n(cpu, 2)})" if cpu is not None else ""))
            row(f"Engine overhead per step, ms ({flow}, {d['steps']} steps)", ", ".join(parts),
                f"bare {_n(d['bare_ms'], 2)} ms/run", None, "< 2")
    burst = s.get("burst", {})
    for kind in ("sqlite", "postgres"):
        d = burst.get(kind)
        if isinstance(d, dict) and "engine" in d:
            e, b = d["engine"], d["baseline"]
            row(f"Burst {burst.get('events'):,} events ({kind}): all succeeded after, s", _n(e.get("drain_s"), 1),
                _n(b.get("drain_s"), 1), (b["drain_s"] / e["drain_s"]) if e.get("drain_s") and b.get("drain_s") else None)
            row(f"Burst ({kind}): errors / lost / doubled calls",
                f"{sum(v for k, v in e['codes'].items() if k != '202')} / {e['lost']} / {e['doubled_calls']}",
                f"{sum(v for k, v in b['codes'].items() if k != '202')} / {b['lost']} / {b['doubled_calls']}", None, "0 / 0")
            row(f"Burst ({kind}): peak RSS web worker / worker, MB",
                f"{_n(e['web_worker_peak_rss_mb'])} / {_n(e['worker_peak_rss_mb'])}",
                f"{_n(b['web_worker_peak_rss_mb'])} / {_n(b['worker_peak_rss_mb'])}", None, "< 80 / < 100")
    page = s.get("runs_page", {})
    for kind in ("sqlite", "postgres"):
        d = page.get(kind)
        if not isinstance(d, dict):
            continue
        for name, res in d.items():
            if isinstance(res, dict) and "median_ms" in res:
                row(f"Runs page {kind} ({page.get('runs', 0):,} runs): `{name}` median / p95 ms",
                    f"{_n(res['median_ms'], 1)} / {_n(res['p95_ms'], 1)}", "", None, "< 150 / < 300")
            elif isinstance(res, dict) and "error" in res:
                row(f"Runs page {kind}: `{name}` FAILED", _cell(res["error"]), "")
        if d.get("routes_missing"):
            row(f"Runs page {kind}: routes not registered yet", ", ".join(f"`{m}`" for m in d["routes_missing"]), "")
    sc = s.get("scaling", {})
    if isinstance(sc, dict) and "ingest_rps" in sc:
        row(f"Scaling ({sc['backend']}): ingest req/s, 1 -> 2 web workers",
            f"{_spread(sc['ingest_rps']['web_workers_1'])} -> {_spread(sc['ingest_rps']['web_workers_2'])}", "",
            sc.get("ingest_gain"))
        row(f"Scaling ({sc['backend']}): one-call runs/s, 1 -> 2 worker processes",
            f"{_spread(sc['e2e_one_runs_per_s']['worker_processes_1'], 1)} -> "
            f"{_spread(sc['e2e_one_runs_per_s']['worker_processes_2'], 1)}", "", sc.get("e2e_gain"))
    for db in ("sqlite", "postgres"):
        c = _g(sc, f"commit_ceiling_{db}")
        if c:
            row(f"Database ceiling ({db}): small write transactions/s, {c['threads']} connections",
                _n(c["commits_per_s"]), "")
    for name, d in s.items():
        if isinstance(d, dict) and "error" in d:
            row(f"{name}: FAILED", _cell(d["error"]), "")
    peers = s.get("peers")
    if isinstance(peers, dict) and "runs" in peers:
        from bench.peers_report import peers_table

        lines += ["", "Peers (`../shared/peers`, wrk -t1 -c32 -d10s -s post1k.lua):", "",
                  peers_table(peers).split("\nTargets:")[0].rstrip()]
    t = r.get("targets") or targets(r)
    met = sum(1 for x in t if x["met"] is True)
    lines.append("")
    lines.append(f"Targets met: {met} of {len(t)}. Missed: " + (", ".join(
        f"{x['target']} = {_fmt(x['value'])} (goal {x['goal']})" for x in t if x["met"] is False) or "none") + ".")
    noise = r.get("noise") or {}
    busy = [f"{k} {v['other_cores_busy']}" for k, v in noise.items() if v.get("other_cores_busy", 0) >= 0.2]
    if busy:
        lines.append(f"Other processes kept cores busy during: {', '.join(busy)} (of {r['machine']['nproc']}): "
                     "figures are depressed by that much contention.")
    return "\n".join(lines)


def _cell(text: str, limit: int = 120) -> str:
    """One table cell: no newlines or pipes."""
    return " ".join(str(text).split())[:limit].replace("|", "/")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def machine_table(r: dict[str, Any]) -> str:
    """The machine and software versions of a run, as a Markdown table."""
    m = r.get("machine", {})
    rows = [("CPU", f"{m.get('nproc')} x {m.get('cpu')}"), ("RAM", f"{m.get('ram_gb')} GiB"),
            ("OS", m.get("os")), ("Python", m.get("python")), ("SQLite", m.get("sqlite")),
            ("PostgreSQL", m.get("postgres")), ("Redis", m.get("redis")), ("wrk", m.get("wrk")),
            ("Flask / gunicorn / Huey", f"{m.get('flask')} / {m.get('gunicorn')} / {m.get('huey')}"),
            ("SQLAlchemy / psycopg / httpx", f"{m.get('sqlalchemy')} / {m.get('psycopg')} / {m.get('httpx')}"),
            ("Commit measured", f"{m.get('git')}" + (" + uncommitted changes in engine/ or web/" if m.get("git_dirty") else "")),
            ("Run", f"{r.get('started')}, {r.get('seconds')} s, logs in {r.get('logdir')}")]
    return "\n".join(["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]])


if __name__ == "__main__":
    data = json.loads(open(sys.argv[1]).read())
    if "--machine" in sys.argv:
        print(machine_table(data))
    else:
        print(render_table(data))
