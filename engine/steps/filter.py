"""``filter: <expression>``: false ends the run as ``filtered`` (not a failure)."""

from __future__ import annotations

from engine.steps import Outcome, StepContext, StepType, register
from engine.templating import Expr


def execute(ctx: StepContext) -> Outcome:
    expr: Expr = ctx.step.config
    passed = bool(expr.render(ctx.render))
    return Outcome(output=passed, input=getattr(expr, "source", None), stop=not passed)


register(
    StepType(
        name="filter",
        help="Continue only when the expression is true; otherwise the run ends with status `filtered`.",
        shape="expression",
        build=lambda expr: expr,
        execute=execute,
        example='filter: event.type == "payment_intent.succeeded"',
    )
)
