"""``switch: {cases: [...], default: [...]}``: the steps of the first case whose ``when`` is true.

Exactly one branch runs (or none, without a default). ``steps.<id>.case`` says which: the case's
position from 0, or ``default``. Ids are unique across the flow, so a step inside a case is read
as ``steps.<its id>`` after the switch, and is null when its case did not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.model import Step
from engine.steps import Block, Field, Outcome, StepContext, StepType, register
from engine.templating import Expr


@dataclass(frozen=True)
class Case:
    when: Expr
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class SwitchConfig:
    cases: tuple[Case, ...]
    default: tuple[Step, ...] | None = None


CASE_FIELDS = (
    Field("when", "expression", "The condition of this case.", required=True, example='event.type == "invoice.paid"'),
    Field("steps", "steps", "The steps run when this case is the first that matches.", required=True),
)
FIELDS = (
    Field("cases", "list", "Cases tried in order; the first whose `when` is true runs.", required=True,
          fields=CASE_FIELDS),
    Field("default", "steps", "The steps run when no case matches (without it, nothing runs)."),
)


def build(parsed: dict[str, Any]) -> SwitchConfig:
    cases = tuple(Case(c["when"], c["steps"] or ()) for c in parsed["cases"] or () if c.get("when") is not None)
    return SwitchConfig(cases=cases, default=parsed["default"])


def _blocks(cfg: SwitchConfig) -> tuple[Block, ...]:
    blocks = tuple(Block(str(i), case.steps) for i, case in enumerate(cfg.cases))
    return blocks + ((Block("default", cfg.default),) if cfg.default is not None else ())


def execute(ctx: StepContext) -> Outcome:
    cfg: SwitchConfig = ctx.step.config
    assert ctx.blocks is not None
    chosen: Block | None = None
    for i, case in enumerate(cfg.cases):
        if case.when.render(ctx.render):
            chosen = Block(str(i), case.steps)
            break
    if chosen is None and cfg.default is not None:
        chosen = Block("default", cfg.default)
    for block in _blocks(cfg):
        if chosen is None or block.label != chosen.label:
            ctx.blocks.skip(block.steps)
    if chosen is None:
        return Outcome(output={"case": None})
    label: int | str = int(chosen.label) if chosen.label.isdigit() else chosen.label
    output = ctx.blocks.run(chosen.steps, chosen.label)
    return Outcome(output={"case": label, "output": output}, input={"case": label})


register(
    StepType(
        name="switch",
        help="Run the steps of the first case whose `when` is true (or `default:`); `steps.<id>.case` says which.",
        shape="fields",
        fields=FIELDS,
        build=build,
        execute=execute,
        children=_blocks,
        example=('switch:\n  cases:\n    - when: event.type == "invoice.paid"\n      steps:\n'
                 '        - id: invoice\n          http: {url: "${ACCOUNTING_URL}/invoices", json: {id: "{{ event.id }}"}}\n'
                 '  default:\n    - id: ignore\n      fail: "unexpected event {{ event.type }}"'),
    )
)
