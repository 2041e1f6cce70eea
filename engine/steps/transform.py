"""``transform: {...}``: build a new value from templates; later steps read it as ``steps.<id>``."""

from __future__ import annotations

from engine.steps import Outcome, StepContext, StepType, register
from engine.templating import Expr


def execute(ctx: StepContext) -> Outcome:
    expr: Expr = ctx.step.config
    return Outcome(output=expr.render(ctx.render))


register(
    StepType(
        name="transform",
        help="Render a value (usually a mapping) from templates and JSONPaths; its output is `steps.<id>`.",
        shape="value",
        build=lambda expr: expr,
        execute=execute,
        example='transform:\n  email: "{{ event.data.object.receipt_email | lower }}"\n  customer: $.data.object.customer',
    )
)
