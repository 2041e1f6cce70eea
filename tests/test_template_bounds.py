"""Template work bounds (issue "Hardening", items 3 and 4): every attack found with only a flow file fails
with a one-line TemplateError naming file:line, at load or at render, within a small memory allowance and
the render deadline.

Each attack runs in a forked child limited to 256 MB more address space, so without its bound it fails
here as a MemoryError or a timeout instead of taking the machine down.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from engine import Event, RunStatus, load_flow, run_flow
from engine.errors import FlowInvalid, TemplateError
from engine.jinjaenv import MAX_OUTPUT
from engine.templating import RenderContext, Where, compile_value
from tests.support import in_fork

W = Where("flows/f.yaml", 7, "steps[0].transform.x")
BIG = "x" * 100_000
EVENT = {"items": [1, 2], "s": BIG, "lines": "\n" * 99_999, "tabs": "\t" * 99_999, "rows": [[1] * 10] * 20_000}


def compile_and_render(source: str, deadline_s: float = 1.0) -> tuple[str, str]:
    """(stage, error) of compiling then rendering ``source``: stage is compile, render or ok."""
    try:
        expr = compile_value(source, W)
    except TemplateError as exc:
        return "compile", str(exc)
    try:
        expr.render(RenderContext({"event": EVENT}, deadline_s=deadline_s))
    except TemplateError as exc:
        return "render", str(exc)
    return "ok", ""


def in_child(source: str, seconds: float = 15.0, mem_mb: int = 256) -> tuple[str, str, float]:
    """compile_and_render in a forked child with an address-space limit: (stage, message, seconds taken)."""
    return in_fork(compile_and_render, source, seconds=seconds, mem_mb=mem_mb)


DOUBLING = "{% set ns = namespace(v=START) %}{% for i in range(64) %}{% set ns.v = ns.v OP ns.v %}{% endfor %}{{ 1 }}"

ATTACKS = {  # source: the stage it must fail at, the words its message must contain
    "percent star width": ("{{ '%*s' % (1000000000, 'x') }}", "render", "widths above"),
    "percent many widths": ("{{ ('%99999d' * 1000) % ((1,) * 1000) }}", "render", "more than"),
    "format nested width": ("{{ '{:{}}'.format('x', 1000000000) }}", "render", "format widths"),
    "format_map width": ("{{ '{a:{w}}'.format_map({'a': 'x', 'w': 1000000000}) }}", "render", "format widths"),
    "batch folded at load": ("{{ [1] | batch(300000000, 0) | list }}", "compile", "batch"),
    "batch at render": ("{{ event.items | batch(300000000, 0) | list }}", "render", "batch"),
    "slice": ("{{ event.items | slice(300000000, 0) | list }}", "render", "slice"),
    "tojson indent": ("{{ event.items | tojson(indent=300000000) }}", "render", "indent"),
    "tojson of repeated refs": ("{{ ([event.s] * 100000) | tojson }}", "render", "repetition"),
    "lipsum": ("{{ lipsum(1000000) }}", "render", "lipsum"),
    "concat doubling": (DOUBLING.replace("START", "'x'").replace("OP", "~"), "render", "concatenation"),
    "plus doubling": (DOUBLING.replace("START", "'x'").replace("OP", "+"), "render", "concatenation"),
    "list plus doubling": (DOUBLING.replace("START", "[1]").replace("OP", "+"), "render", "list concatenation"),
    "int square in a loop": (DOUBLING.replace("START", "3").replace("OP", "*"), "render", "bits"),
    "join of repeated refs": ("{{ (['x' * 100000] * 100000) | join }}", "render", "more than"),
    "str.join": ("{{ event.s.join(['a'] * 100000) }}", "render", "str.join"),
    "output of repeated refs": ("{{ [event.s] * 100000 }} and text", "render", "more than"),
    "sum of lists": ("{{ event.rows | sum(start=[]) | length }}", "render", "sum"),
    "indent many lines": ("{{ event.lines | indent(99999) }}", "render", "indent"),
    "wordwrap wrapstring": ("{{ event.s | wordwrap(1, wrapstring='y' * 99999) }}", "render", "wordwrap"),
    "expandtabs": ("{{ event.tabs.expandtabs(99999) }}", "render", "expandtabs"),
    "int.to_bytes": ("{{ (1).to_bytes(1000000000, 'big') | length }}", "render", "to_bytes"),
    "translate": ("{{ event.s.translate({120: 'y' * 99999}) }}", "render", "translate"),
    "pprint of repeated refs": ("{{ ([event.s] * 100000) | pprint }}", "render", "more than"),
    "output in a loop": ("{% for i in range(100000) %}{{ event.s }}{% endfor %}", "render", "in all"),
    "nested for over a string": ("{% for a in event.s %}{% for b in event.s %}{% endfor %}{% endfor %}",
                                 "render", "render deadline"),
    "macro fan-out": ("{% macro f(n) %}{% if n < 40 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}"
                      "{{ f(0) }}", "render", "render deadline"),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_fails_with_a_located_one_line_template_error(name: str) -> None:
    source, stage, words = ATTACKS[name]
    got, message, elapsed = in_child(source)
    assert (got, words in message) == (stage, True), f"{name}: {got} {message[:200]} after {elapsed:.1f}s"
    assert message.startswith("flows/f.yaml:7: steps[0].transform.x: ") and "\n" not in message


def test_slow_render_ends_at_its_cpu_deadline_in_a_worker_thread() -> None:
    """Workers render in non-main threads: the deadline needs no signal. CPU time, not wall time, so the
    window below is derived from what the thread itself used."""
    expr = compile_value("{% for a in event.s %}{% for b in event.s %}{% endfor %}{% endfor %}", W)
    seen: dict[str, Any] = {}

    def work() -> None:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            expr.render(RenderContext({"event": EVENT}, deadline_s=0.3))
        except TemplateError as exc:
            seen["error"] = str(exc)
        seen["cpu"], seen["wall"] = time.thread_time() - cpu, time.perf_counter() - wall

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "render did not stop"
    assert seen["error"] == "flows/f.yaml:7: steps[0].transform.x: template took longer than 0.3s (render deadline)"
    # Until the first 10 ms of wall time the budget counts wall time as CPU (the clock is read lazily), so
    # the render may stop a few ms of CPU early but never before 0.3 s of wall time, and at most one check
    # interval past the deadline.
    assert seen["wall"] >= 0.3 and 0.3 - 0.05 <= seen["cpu"] < 0.3 + 0.5, seen


def test_the_deadline_is_per_render() -> None:
    expr = compile_value("{% for i in range(30000) %}{{ i }}{% endfor %}", W)
    ctx = RenderContext({"event": EVENT}, deadline_s=0.5)
    for _ in range(3):  # each render gets its own time; three in a row still pass
        assert len(expr.render(ctx)) > 30_000


@pytest.mark.parametrize("source", [
    "{{ 'x' * 1000 ~ 'y' }}", "{{ '%5s|%-3d' % ('a', 7) }}", "{{ '{:>8}'.format('a') }}", "{{ [1, 2] * 3 }}",
    "{{ event.items | batch(2, 0) | list }}", "{{ event.items | tojson(indent=2) }}", "{{ lipsum(2) }}",
    "{{ [[1], [2]] | sum(start=[]) }}", "{{ ','.join(['a', 'b']) }}", "{{ 'a\nb' | indent(2) }}",
    "{% set ns = namespace(n=3) %}{% for i in range(5) %}{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n }}",
    "{{ event.items | join(', ') }}", "{{ event.s | length }}", "{{ event.items | pprint }}",
    "{{ ','.join(event.items | map('string')) }}",
])
def test_ordinary_templates_stay_within_the_bounds(source: str) -> None:
    stage, message = compile_and_render(source)
    assert stage == "ok", message


def test_output_just_under_the_cap_renders() -> None:
    expr = compile_value("{% for i in range(9) %}{{ event.s }}{% endfor %}", W)
    assert len(expr.render(RenderContext({"event": EVENT}))) == 9 * len(BIG) < MAX_OUTPUT


def test_a_bomb_in_a_flow_file_is_a_located_load_error() -> None:
    """The web process reloads flow files: Jinja's constant folding must not allocate while loading."""
    text = "id: f\nsteps:\n  - id: a\n    transform:\n      x: \"{{ [1] | batch(300000000, 0) | list }}\"\n"
    with pytest.raises(FlowInvalid) as info:
        load_flow(text, "flows/f.yaml")
    [error] = info.value.errors
    assert str(error).startswith("flows/f.yaml:5: steps[0].transform.x: template does not compile: the batch filter")


def test_a_bomb_at_run_time_fails_the_step_without_a_retry() -> None:
    text = ("id: f\nsteps:\n  - id: a\n    transform:\n"
            "      x: \"{% for a in event.s %}{% for b in event.s %}{% endfor %}{% endfor %}\"\n")
    result = run_flow(load_flow(text, "flows/f.yaml"), Event(body={"s": BIG}))
    assert result.status is RunStatus.FAILED and result.next_attempt_at is None
    [step] = result.steps
    assert step.error_type == "TemplateError"
    assert step.error_message == "flows/f.yaml:5: steps[0].transform.x: template took longer than 1s (render deadline)"


def test_every_integer_a_template_makes_can_be_stored() -> None:
    """A native integer result goes into JSON records: past Python's 4,300-digit limit it could not."""
    import json

    from engine.errors import TemplateError
    from engine.templating import RenderContext, Where, compile_value

    assert len(json.dumps(compile_value("{{ 3 ** 6000 }}", Where()).render(RenderContext({})))) > 2800
    with pytest.raises(TemplateError, match="bits"):
        compile_value("{{ n ** 20000 }}", Where()).render(RenderContext({"n": 2}))
