"""A run's step records as the tree the flow ran: one card per step path (its attempts folded into a
timeline), foreach items as rows, the chosen case of a switch, and the on_failure steps.

Records arrive flat and in write order (a foreach container's own record after its items'). Paths
carry the structure (engine.runner): ``lines[sku-42].decrement`` is step ``decrement`` of item
``sku-42`` of foreach ``lines``; ``route.0.invoice`` is step ``invoice`` of case 0 of switch
``route``; ``on_failure.alert`` is the error handler. The flow definition, when known, only adds
the text of a case's condition: the tree is built from the paths, so a run of a flow version that
is gone still reads right.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from engine.model import Flow, Step

ON_FAILURE = "on_failure"
# worst first: an item or container shows the worst status of what ran inside it
_RANK = {"failed": 0, "running": 1, "waiting": 2, "filtered": 3, "succeeded": 4, "skipped": 5}


def split_path(path: str) -> list[str]:
    """``lines[a.b].route.0.x`` -> ``['lines[a.b]', 'route', '0', 'x']``: dots inside an item key do not split."""
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(path):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        elif ch == "." and depth == 0:
            parts.append(path[start:i])
            start = i + 1
    parts.append(path[start:])
    return parts


def _item(token: str) -> tuple[str, str | None]:
    """``lines[sku-42]`` -> (``lines``, ``sku-42``); a plain id has no item key."""
    if token.endswith("]") and "[" in token:
        head, key = token[:-1].split("[", 1)
        return head, key.replace("%5B", "[").replace("%5D", "]").replace("%25", "%")
    return token, None


def worst(statuses: Sequence[str]) -> str:
    return min(statuses, key=lambda s: _RANK.get(s, 1)) if statuses else "succeeded"


def origin(request: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Where a call went: method, scheme, host, port and path of its (redacted) URL; None if not a URL."""
    url = (request or {}).get("url")
    if not isinstance(url, str) or "://" not in url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return {"method": (request or {}).get("method"), "scheme": parts.scheme, "host": parts.hostname,
            "port": port or default, "path": parts.path or "/",
            "origin": f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"}


@dataclass
class _Node:
    path: str
    step_id: str
    attempts: list[dict[str, Any]] = field(default_factory=list)
    items: dict[str, _Group] = field(default_factory=dict)  # foreach: item key -> its steps
    cases: dict[str, _Group] = field(default_factory=dict)  # switch: case label -> its steps


@dataclass
class _Group:
    nodes: dict[str, _Node] = field(default_factory=dict)  # by path, in order of first record


def _place(top: _Group, handler: _Group, view: dict[str, Any]) -> None:
    tokens = split_path(view["path"])
    group, prefix = top, ""
    if len(tokens) > 1 and tokens[0] == ON_FAILURE:
        group, prefix, tokens = handler, f"{ON_FAILURE}.", tokens[1:]
    i = 0
    while i < len(tokens) - 1:  # every token but the last names a container
        step_id, key = _item(tokens[i])
        path = prefix + step_id
        node = group.nodes.setdefault(path, _Node(path, step_id))
        if key is not None:  # foreach item
            group = node.items.setdefault(key, _Group())
            prefix, i = f"{path}[{tokens[i][len(step_id) + 1:-1]}].", i + 1
        else:  # switch case: the next token is the case's label
            group = node.cases.setdefault(tokens[i + 1], _Group())
            prefix, i = f"{path}.{tokens[i + 1]}.", i + 2
    leaf = tokens[-1]
    node = group.nodes.setdefault(prefix + leaf, _Node(prefix + leaf, leaf))
    node.attempts.append(view)


def _when_text(flow: Flow | None, step_id: str, label: str) -> str | None:
    step: Step | None = flow.by_id.get(step_id) if flow is not None else None
    if step is None or step.type != "switch" or not label.isdigit():
        return None
    cases = getattr(step.config, "cases", ())
    return getattr(cases[int(label)].when, "source", None) if int(label) < len(cases) else None


def _render(group: _Group, flow: Flow | None) -> list[dict[str, Any]]:
    return [_render_node(n, flow) for n in group.nodes.values()]


def _render_node(node: _Node, flow: Flow | None) -> dict[str, Any]:
    attempts = sorted(node.attempts, key=lambda a: (a["attempt"], a["started_at"] or ""))
    final = attempts[-1] if attempts else None
    out: dict[str, Any] = {"path": node.path, "step_id": node.step_id, "kind": "step", "attempts": attempts,
                           "final": final, "retries": max(0, len(attempts) - 1),
                           "origin": origin(final["request"]) if final else None}
    inner: list[str] = []
    if node.items:
        items: list[dict[str, Any]] = []
        for key, group in node.items.items():
            steps = _render(group, flow)
            status = worst([s["status"] for s in steps])
            inner.append(status)
            items.append({"key": key, "status": status, "steps": steps})
        total = (final or {}).get("input") or {}
        counts: dict[str, int] = {}
        for it in items:
            counts[it["status"]] = counts.get(it["status"], 0) + 1
        out |= {"kind": "foreach", "items": items, "item_counts": counts,
                "item_total": total.get("items") if isinstance(total, dict) else None,
                "all_succeeded": bool(items) and all(it["status"] == "succeeded" for it in items)}
    if node.cases or (final and isinstance(final["output"], dict) and "case" in final["output"]
                      and (flow is None or node.step_id not in flow.by_id
                           or flow.by_id[node.step_id].type == "switch")):
        chosen = final["output"].get("case") if final and isinstance(final["output"], dict) else None
        cases = []
        for label, group in node.cases.items():
            steps = _render(group, flow)
            inner += [s["status"] for s in steps]
            cases.append({"label": label, "when": _when_text(flow, node.step_id, label), "steps": steps})
        if chosen is None and len(cases) == 1:
            chosen = cases[0]["label"]  # the switch's own record is not written yet (a failure inside its case)
        out |= {"kind": "switch", "case": None if chosen is None else str(chosen), "cases": cases,
                "case_when": None if chosen is None else _when_text(flow, node.step_id, str(chosen))}
    # a container's own record is written last and is authoritative; before it, what ran inside says
    out["status"] = _status(final) if final is not None else worst(inner)
    return out


def _status(view: Mapping[str, Any]) -> str:
    """A failed attempt with another one scheduled is waiting, not failed."""
    return "waiting" if view["status"] == "failed" and view.get("retry_at") else str(view["status"])


def step_tree(views: Sequence[dict[str, Any]], flow: Flow | None = None) -> dict[str, list[dict[str, Any]]]:
    """The records (``web.context.step_view`` dicts) as ``{"steps": [...], "on_failure": [...]}`` nodes.

    A node is a step path with its ``attempts`` (oldest first) and ``final`` attempt; a foreach node has
    ``items`` (key, worst status, nested nodes) and ``item_counts``; a switch node has the chosen ``case``
    and the ``cases`` that ran.
    """
    top, handler = _Group(), _Group()
    for view in views:
        _place(top, handler, view)
    return {"steps": _render(top, flow), "on_failure": _render(handler, flow)}


_STEP_ERROR = re.compile(r"step (.+?): (.*)", re.S)


def where(path: str) -> dict[str, Any]:
    """Where a step path sits: its id, the foreach items and switch cases around it, outermost first."""
    tokens = split_path(path)
    inside: list[dict[str, str]] = []
    if len(tokens) > 1 and tokens[0] == ON_FAILURE:
        inside.append({"kind": "on_failure"})
        tokens = tokens[1:]
    i = 0
    while i < len(tokens) - 1:
        step_id, key = _item(tokens[i])
        if key is not None:
            inside.append({"kind": "item", "step": step_id, "key": key})
            i += 1
        else:
            inside.append({"kind": "case", "step": step_id, "case": tokens[i + 1]})
            i += 2
    return {"path": path, "step_id": tokens[-1], "inside": inside}


def _context_text(place: Mapping[str, Any]) -> str:
    parts = []
    for part in reversed(place["inside"]):
        if part["kind"] == "item":
            parts.append(f"item {part['key']} of {part['step']}")
        elif part["kind"] == "case":
            parts.append(f"case {part['case']} of {part['step']}")
        else:
            parts.append("the on_failure handler")
    return f" ({', '.join(parts)})" if parts else ""


def why(status: str, error: str | None, reason: str | None, filtered_by: str | None) -> dict[str, Any] | None:
    """The reason behind a non-success status, for the runs list and the run page: which filter stopped
    a filtered run, which step (inside which item or case) failed or is waiting, and the message."""
    if status == "succeeded" or (status == "filtered" and filtered_by is None and not error):
        return {"summary": "stopped by a filter", "step": None} if status == "filtered" else None
    if status == "filtered":
        place = where(filtered_by) if filtered_by else None
        return {"summary": f"stopped by filter {filtered_by}{_context_text(place) if place else ''}",
                "step": place, "message": None}
    text = error if status == "failed" else reason
    if not text:
        return None
    match = _STEP_ERROR.match(text)
    if match is None:
        return {"summary": text, "step": None, "message": text}
    place = where(match.group(1))
    verb = {"failed": "failed at", "waiting": "waiting at", "running": "at"}.get(status, "at")
    return {"summary": f"{verb} {place['path']}{_context_text(place)}: {match.group(2)}", "step": place,
            "message": match.group(2)}


def resolution(status: str, children: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """A failed run is ``resolved`` by a replay or retry that succeeded, ``retried`` while its newest follow-up
    has not (that run carries the failure on), and ``unresolved`` when nothing followed it yet."""
    if status != "failed":
        return None
    done = [c for c in children if c["status"] == "succeeded"]
    if done:
        return {"state": "resolved", "by": done[0]["id"], "kind": done[0]["replay_kind"]}
    if children:
        last = children[-1]
        return {"state": "retried", "by": last["id"], "kind": last["replay_kind"], "by_status": last["status"]}
    return {"state": "unresolved", "by": None}
