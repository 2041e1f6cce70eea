"""The peers section's table and targets (issue 17), from the dict bench/peers.py returns."""

from __future__ import annotations

import statistics
from typing import Any

from bench.peers_setup import HOOKLINE_SETUPS

LABELS = {"node-red": "Node-RED 4.1.15, `/hooks/sync`", "n8n": "n8n 2.8.4 (SQLite, executions saved)",
          "serve": "Hookline `hookline serve` (embedded)", "web-sqlite": "Hookline `web --workers 2` + `worker`, SQLite",
          "web-postgres": "Hookline `web --workers 2` + `worker`, PostgreSQL + Redis"}
DURABLE = {"node-red": "no", "n8n": "yes"}


def _med(items: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in items if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _span(items: list[dict[str, Any]], key: str, digits: int = 0) -> str:
    vals = [r[key] for r in items if r.get(key) is not None]
    if not vals:
        return "-"
    med = f"{statistics.median(vals):,.{digits}f}"
    return med if min(vals) == max(vals) else f"{med} ({min(vals):,.{digits}f}-{max(vals):,.{digits}f})"


def by_system(out: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    res: dict[str, list[dict[str, Any]]] = {}
    for r in out.get("runs", []):
        if "error" not in r:
            res.setdefault(r["system"], []).append(r)
    return res


def ceilings(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per backend: Hookline's ingest, the sync and gthread ceilings, the faster one and the ratio to it."""
    res: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in out.get("ingest", []):
        if "error" not in r:
            seen.setdefault((r["backend"], r["system"]), []).append(r)
    for (kind, system), items in seen.items():  # medians over the repetitions
        res.setdefault(kind, {})[system] = _med(items, "acked_rps")
        res[kind][system + "-cpu"] = _med(items, "cpu_ms_per_request")
    for d in res.values():
        best = max((d[k] for k in ("ceiling-sync", "ceiling-gthread") if k in d), default=None)
        d["ceiling"] = best
        d["ratio"] = d["hookline"] / best if best and "hookline" in d else None
    return res


def ratio(systems: dict[str, list[dict[str, Any]]], name: str, peer: str) -> float | None:
    a, b = _med(systems.get(name, []), "runs_per_s"), _med(systems.get(peer, []), "runs_per_s")
    return a / b if a and b else None


def peers_targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Each measurable target of issue 17: value, goal, met (None: not measured in this run)."""
    systems = by_system(out)
    res: list[dict[str, Any]] = []

    def add(name: str, value: Any, goal: str, met: bool | None) -> None:
        res.append({"target": name, "value": value, "goal": goal, "met": met})

    for setup, goal in (("web-sqlite", 0.5), ("web-postgres", 0.5), ("serve", 0.3)):
        r = ratio(systems, setup, "node-red")
        add(f"{setup} completed runs/s vs Node-RED", r, f">= {goal} (moonshot 1.0)" if goal == 0.5 else f">= {goal}",
            None if r is None else r >= goal)
    rate = out.get("serve_rate") or {}
    if rate.get("p99_ms") is not None:
        kept = rate["acked_rps"] >= 0.95 * rate["offered_rps"]
        add(f"serve ack p99 at {rate['offered_rps']:.0f} req/s offered (ms)", rate["p99_ms"], "< 100",
            rate["p99_ms"] < 100 and kept)
    for kind, d in ceilings(out).items():
        add(f"ingest {kind} vs durable-ingest ceiling", d.get("ratio"), ">= 0.9",
            None if d.get("ratio") is None else d["ratio"] >= 0.9)
    for setup in HOOKLINE_SETUPS:
        r = ratio(systems, setup, "n8n")
        if r is not None:
            add(f"{setup} vs n8n", r, ">= 10", r >= 10)
    biggest = max((r["rss_max_mb"] for s in HOOKLINE_SETUPS for r in systems.get(s, [])), default=None)
    add("Hookline peak RSS per process (MB)", biggest, "< 100", None if biggest is None else biggest < 100)
    for k in out.get("kill", []):
        if "error" not in k:
            ok = k["lost"] == 0 and k["doubled"] == 0 and k["unfinished"] == 0 and k["drained"]
            add(f"SIGKILLed worker ({k['backend']}): lost / doubled", f"{k['lost']} / {k['doubled']}", "0 / 0", ok)
    return res


def peers_table(out: dict[str, Any]) -> str:
    systems = by_system(out)
    peers = [p for p in ("node-red", "n8n") if p in systems]
    head = ["System", "acknowledged req/s", "ack p50 / p99 ms", "completed runs/s",
            *(f"x {LABELS[p].split(',')[0].split(' (')[0]}" for p in peers), "every run durable", "CPU ms per run",
            "peak RSS MB (all processes; largest)", "other processes, cores busy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in ("node-red", "n8n", *HOOKLINE_SETUPS):
        items = systems.get(name)
        if not items:
            err = next((r["error"] for r in out.get("runs", []) if r["system"] == name and "error" in r), None)
            if err:
                lines.append(f"| {LABELS[name]} | not measured: {err[:100]} |" + " |" * (len(head) - 2))
            continue
        ratios = [f"{ratio(systems, name, p):.2f}" if name not in peers and ratio(systems, name, p) else "-"
                  for p in peers]
        procs = max(r["processes"] for r in items)
        lines.append(f"| {LABELS[name]} | {_span(items, 'acked_rps')} | {_span(items, 'p50_ms')} / "
                     f"{_span(items, 'p99_ms')} | {_span(items, 'runs_per_s')} | {' | '.join(ratios)}"
                     f"{' | ' if ratios else ''}{DURABLE.get(name, 'yes')} | {_span(items, 'cpu_ms_per_run', 2)} | "
                     f"{_span(items, 'rss_total_mb')} ({procs} processes); {_span(items, 'rss_max_mb')} | "
                     f"{_span(items, 'other_cores_busy', 2)} |")
    ceil = ceilings(out)
    if ceil:
        lines += ["", "| Ingest only (no worker), same load, acknowledged req/s | "
                  + " | ".join(ceil) + " |", "|---|" + "---|" * len(ceil)]
        for key, label in (("ceiling-sync", "ceiling: bench/baseline_ingest.py, gunicorn 2 x sync"),
                           ("ceiling-gthread", "ceiling: bench/baseline_ingest.py, gunicorn 2 x 4 gthread"),
                           ("hookline", "Hookline `hookline web --workers 2`"),
                           ("flask-noop", "(HTTP floor: Flask answering 202, nothing stored, 2 x 4 gthread)")):
            if not any(d.get(key) for d in ceil.values()):
                continue
            lines.append(f"| {label} | " + " | ".join(
                f"{d[key]:,.0f} ({d[key + '-cpu']:.2f} ms CPU each)" if d.get(key) and d.get(key + "-cpu")
                else f"{d[key]:,.0f}" if d.get(key) else "-" for d in ceil.values()) + " |")
        lines.append("| Hookline / the faster ceiling | " + " | ".join(
            f"{d['ratio']:.2f}" if d.get("ratio") else "-" for d in ceil.values()) + " |")
    rate = out.get("serve_rate")
    if rate and "error" not in rate:
        lines += ["", f"`hookline serve` at {rate['offered_rps']:.0f} req/s offered (wrk, {rate['connections']} "
                  f"connections paced by post1k.lua + delay()): {rate['acked_rps']:.0f} req/s acknowledged, ack p50 "
                  f"{rate['p50_ms']:.1f} ms, p99 {rate['p99_ms']:.1f} ms."]
    for k in out.get("kill", []):
        if "error" in k:
            lines.append(f"\nSIGKILL mode ({k.get('backend')}): {k['error']}")
            continue
        lines.append(f"\nSIGKILL mode ({k['backend']}): worker killed {k['killed_after_s']:.1f} s into the load, "
                     f"restarted; {k['acked']} acknowledged by wrk, {k['runs']} runs stored ({k['statuses']}), "
                     f"{k['calls']} calls with {k['distinct_keys']} distinct Idempotency-Keys: lost {k['lost']}, "
                     f"doubled {k['doubled']}, unfinished {k['unfinished']}, re-sent with the same key {k['resent']}; "
                     f"drained in {k['drain_s']:.1f} s.")
    lines += ["", "Targets:"]
    for t in peers_targets(out):
        v = t["value"]
        shown = f"{v:.2f}" if isinstance(v, float) else str(v)
        met = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"* {t['target']}: {shown} (goal {t['goal']}): {met}")
    load0, load1 = out.get("uptime_start"), out.get("uptime_end")
    if load0 and load1:
        lines.append(f"\nLoad average before / after: {' '.join(f'{x:.2f}' for x in load0)} / "
                     f"{' '.join(f'{x:.2f}' for x in load1)}")
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    data = json.loads(open(sys.argv[1]).read())
    print(peers_table(data["sections"]["peers"] if "sections" in data else data))
