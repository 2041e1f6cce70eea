"""``fail: "message"``: end the run as ``failed`` with that message (usually under a ``when:``).

For cases a flow can recognise as wrong (an unknown status, a missing field) so an operator sees
the reason instead of a run that succeeded doing nothing. It is not retried; ``on_failure`` runs.
"""

from __future__ import annotations

from engine.errors import StepError
from engine.steps import Outcome, StepContext, StepType, register


def execute(ctx: StepContext) -> Outcome:
    message = ctx.step.config.render(ctx.render)
    raise StepError(str(message) if message not in (None, "") else f"step {ctx.step.id} failed the run")


register(
    StepType(
        name="fail",
        help="End the run as `failed` with this message (templated); `on_failure` steps then run.",
        shape="value",
        build=lambda expr: expr,
        execute=execute,
        example='fail: "order {{ event.id }} has unknown status {{ event.financial_status }}"',
    )
)
