"""A flow as a picture: steps top to bottom, a foreach as a frame around its steps, a switch's cases side
by side, on_failure to the right; laid out here and drawn as inline SVG by flows/_diagram.html.

No JavaScript, CDN or build step: the layout is plain arithmetic over the step tree (boxes of a fixed
size, a sequence stacks, cases sit in columns), and the same nodes, with their counts, are the JSON
twin's ``diagram``. Counts come from the caller (``web.context``), keyed by step id: ids are unique
across a flow, so every item of a foreach adds to its step's node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.model import Flow, Step
from engine.steps import REGISTRY

W, H = 230, 58  # a step's box
GAP_Y, GAP_X, PAD = 30, 26, 14  # between boxes, between case columns, inside a frame
LABEL_H = 22  # a case's or frame's label


@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float
    kind: str  # step | foreach | case | handler
    label: str
    step_id: str | None = None
    type: str | None = None
    detail: str = ""
    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Layout:
    boxes: list[Box] = field(default_factory=list)
    edges: list[tuple[float, float, float, float, str]] = field(default_factory=list)  # x1, y1, x2, y2, class


def _when(step: Step) -> str:
    source = getattr(step.when, "source", None) if step.when is not None else None
    return f"when {source}" if source else ""


class _Drawer:
    def __init__(self, stats: Mapping[str, Mapping[str, Any]]) -> None:
        self.out = Layout()
        self.stats = stats

    def size(self, steps: Sequence[Step]) -> tuple[float, float]:
        """Width and height of a step list, without drawing it."""
        widths: list[float] = [W]
        height = 0.0
        for i, step in enumerate(steps):
            w, h = self.step_size(step)
            widths.append(w)
            height += h + (GAP_Y if i else 0)
        return max(widths), height

    def step_size(self, step: Step) -> tuple[float, float]:
        if step.type == "foreach":
            w, h = self.size(step.config.steps)
            return max(W, w) + 2 * PAD, H + GAP_Y + LABEL_H + h + 2 * PAD
        if step.type == "switch":
            columns = [self.size(b.steps) for b in REGISTRY["switch"].children(step.config)]
            if not columns:
                return W, H
            width = sum(w for w, _ in columns) + GAP_X * (len(columns) - 1)
            return max(W, width), H + GAP_Y + LABEL_H + max(h for _, h in columns)
        return W, H

    def node(self, step: Step, x: float, y: float, width: float) -> Box:
        """The step's own box, centred in ``width``."""
        box = Box(x + (width - W) / 2, y, W, H, "step", step.id, step.id, step.type, _when(step),
                  self.stats.get(step.id, {}))
        self.out.boxes.append(box)
        return box

    def steps(self, steps: Sequence[Step], x: float, y: float, width: float) -> tuple[list[Box], float]:
        """Draw a step list from (x, y) centred in ``width``; returns the boxes it ends at and its bottom."""
        exits: list[Box] = []
        for step in steps:
            entry, ends, bottom = self.step(step, x, y, width)
            for end in exits:
                self.edge(end, entry)
            exits = ends
            y = bottom + GAP_Y
        return exits, y - GAP_Y

    def edge(self, a: Box, b: Box, cls: str = "next") -> None:
        self.out.edges.append((a.x + a.w / 2, a.y + a.h, b.x + b.w / 2, b.y, cls))

    def step(self, step: Step, x: float, y: float, width: float) -> tuple[Box, list[Box], float]:
        """Draw one step (a container with its children): its entry box, the boxes it ends at, its bottom."""
        w, h = self.step_size(step)
        left = x + (width - w) / 2
        if step.type == "foreach":
            frame = Box(left, y + H / 2, w, h - H / 2, "foreach", f"for each item of {step.id}", step.id, "foreach")
            self.out.boxes.append(frame)
            head = self.node(step, left, y, w)
            first = len(self.out.boxes)
            self.steps(step.config.steps, left + PAD, y + H + GAP_Y + LABEL_H, w - 2 * PAD)
            if len(self.out.boxes) > first:
                self.edge(head, self.out.boxes[first])
            return head, [frame], y + h
        head = self.node(step, left, y, w)
        if step.type != "switch":
            return head, [head], y + h
        blocks = REGISTRY["switch"].children(step.config)
        cx = left + (w - (sum(self.size(b.steps)[0] for b in blocks) + GAP_X * (len(blocks) - 1))) / 2
        cases = list(step.config.cases)
        exits: list[Box] = [] if step.config.default is not None else [head]  # no default: maybe no case ran
        for block in blocks:
            cw, _ = self.size(block.steps)
            case = cases[int(block.label)] if block.label.isdigit() else None
            condition = getattr(case.when, "source", "") if case is not None else "no case matched"
            label = Box(cx, y + H + GAP_Y, cw, LABEL_H, "case", f"case {block.label}" if case else "default",
                        detail=str(condition or ""))
            self.out.boxes.append(label)
            self.out.edges.append((head.x + W / 2, y + H, cx + cw / 2, y + H + GAP_Y, "case"))
            ends, _ = self.steps(block.steps, cx, y + H + GAP_Y + LABEL_H, cw)
            exits += ends or [label]
            cx += cw + GAP_X
        return head, exits, y + h


def layout(flow: Flow, stats: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The diagram of ``flow``: ``boxes`` and ``edges`` in SVG user units, and its ``width``/``height``."""
    d = _Drawer(stats or {})
    main_w, _ = d.size(flow.steps)
    _, bottom = d.steps(flow.steps, 0, 0, main_w)
    width, height = main_w, bottom
    if flow.on_failure:
        hw, hh = d.size(flow.on_failure)
        x = main_w + 3 * GAP_X
        frame = Box(x - PAD, 0, hw + 2 * PAD, hh + LABEL_H + 2 * PAD, "handler", "on failure (once, after the run failed)")
        d.out.boxes.insert(0, frame)
        d.steps(flow.on_failure, x, LABEL_H + PAD, hw)
        width, height = x + hw + PAD, max(height, frame.h)
    return {"width": width + 4, "height": height + 4,
            "boxes": [vars(b) | {"stats": dict(b.stats)} for b in d.out.boxes],
            "edges": [{"x1": e[0], "y1": e[1], "x2": e[2], "y2": e[3], "kind": e[4]} for e in d.out.edges]}
