"""``foreach: <list>`` with nested ``steps:``: the same steps once per item (line items, recipients).

Each item runs in its own scope, with ``item`` and ``loop`` (``index`` from 1, ``index0``, ``first``,
``last``, ``length``, ``key``) in templates, and its own step paths (``lines[sku-42].decrement``, or
``lines[3].decrement`` by position), so every item's calls carry their own Idempotency-Key and a
retry resumes at the item that failed. Afterwards ``steps.<id>`` is the list of the items' outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import StepError
from engine.model import Step
from engine.steps import Block, Field, Outcome, StepContext, StepType, register
from engine.templating import Expr, Placeholder

DEFAULT_MAX_ITEMS = 1000
MAX_KEY = 100


@dataclass(frozen=True)
class ForeachConfig:
    items: Expr
    steps: tuple[Step, ...]
    key: Expr | None = None
    concurrency: int = 1
    max_items: int = DEFAULT_MAX_ITEMS
    output: Expr | None = None


OPTIONS = (
    Field("steps", "steps", "The steps run once per item; `item` and `loop` are in scope.", required=True),
    Field("key", "template", "The item's identity in step paths and Idempotency-Keys (default: its position); "
          "keeps them stable when the list is reordered.", example='"{{ item.sku }}"'),
    Field("concurrency", "int", "Items run at once (in order when 1).", default=1, example="4"),
    Field("max_items", "int", "More items than this fail the run before any call is made.",
          default=DEFAULT_MAX_ITEMS, example="100"),
    Field("output", "template", "Each item's result in `steps.<id>` (default: the output of its last step).",
          example='{sku: "{{ item.sku }}", left: "{{ steps.decrement.response.json.left }}"}'),
)


def build(parsed: dict[str, Any]) -> ForeachConfig:
    return ForeachConfig(items=parsed["value"], steps=parsed["steps"] or (), key=parsed["key"],
                         concurrency=parsed["concurrency"] or 1, max_items=parsed["max_items"] or DEFAULT_MAX_ITEMS,
                         output=parsed["output"])


def _key(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    text = text.replace("%", "%25").replace("[", "%5B").replace("]", "%5D")
    if not text:
        raise StepError("foreach key rendered empty")
    return text[:MAX_KEY]


def execute(ctx: StepContext) -> Outcome:
    cfg: ForeachConfig = ctx.step.config
    assert ctx.blocks is not None
    value = cfg.items.render(ctx.render)
    if value is None or isinstance(value, Placeholder):
        value = []
    if isinstance(value, dict | str) or not hasattr(value, "__iter__"):
        raise StepError(f"foreach needs a list, got {type(value).__name__}")
    items = list(value)
    if len(items) > cfg.max_items:
        raise StepError(f"{len(items)} items, more than max_items {cfg.max_items}; nothing was sent")
    scopes: list[tuple[str, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        loop: dict[str, Any] = {"index": i + 1, "index0": i, "first": i == 0, "last": i == len(items) - 1, "length": len(items)}
        variables: dict[str, Any] = {"item": item, "loop": loop}
        key = str(i)
        if cfg.key is not None:
            key = _key(cfg.key.render(ctx.blocks.context(variables)))
            if key in seen:
                raise StepError(f"items {seen[key] + 1} and {i + 1} have the same key {key!r}; keys must be unique")
            seen[key] = i
        loop["key"] = key
        scopes.append((key, variables))
    outputs = ctx.blocks.each(cfg.steps, scopes, cfg.concurrency, cfg.output)
    return Outcome(output=outputs, input={"items": len(items)})


register(
    StepType(
        name="foreach",
        help="Run nested `steps:` once per item of a list (a JSONPath or `{{ expression }}`); "
             "`steps.<id>` is then the list of the items' outputs.",
        shape="value",
        build=build,
        execute=execute,
        options=OPTIONS,
        children=lambda cfg: (Block("", cfg.steps, scoped=True),),
        example=('foreach: $.line_items\nkey: "{{ item.sku }}"\nsteps:\n  - id: decrement\n    http:\n'
                 '      url: ${INVENTORY_URL}/decrement\n      json: {sku: "{{ item.sku }}", qty: "{{ item.quantity }}"}'),
    )
)
