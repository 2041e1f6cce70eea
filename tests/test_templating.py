from __future__ import annotations

import pytest

from engine.errors import MissingEnvError, TemplateError
from engine.model import Headers
from engine.templating import Placeholder, RenderContext, Where, compile_expression, compile_key, compile_value

W = Where("f.yaml", 7, "steps[0].transform.x")
EVENT = {"id": "evt_1", "type": "paid", "amount": 2000, "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 3}],
         "data": {"object": {"email": "A@B.COM"}}}


def render(value: object, env: dict[str, str] | None = None, **variables: object) -> object:
    ctx = RenderContext({"event": EVENT, "headers": Headers({"X-Kind": "push"}), "steps": {}, **variables}, env)
    return compile_value(value, W).render(ctx)


def test_single_expression_keeps_native_type() -> None:
    assert render("{{ event.amount / 100 }}") == 20.0
    assert render("{{ event.items | map(attribute='sku') | list }}") == ["A", "B"]
    assert render("{{ event.missing_ok | default(none) }}") is None
    assert render("{{ event.amount > 10 }}") is True


def test_mixed_text_is_a_string() -> None:
    assert render("total {{ event.amount }} for {{ event.data.object.email | lower }}") == "total 2000 for a@b.com"


def test_jsonpath_one_several_none_and_filters() -> None:
    assert render("$.data.object.email") == "A@B.COM"
    assert render("$.items[*].sku") == ["A", "B"]
    assert render("$.nope") is None
    assert render("$.items[?(@.qty > 1)].sku") == "B"
    assert render("$$5 off") == "$5 off"


def test_dict_keys_win_over_dict_methods() -> None:
    assert render("{{ event.items | length }}") == 2


def test_headers_are_case_insensitive() -> None:
    assert render("{{ headers['x-kind'] }} {{ headers['X-KIND'] }}") == "push push"


def test_nested_structures_render_recursively() -> None:
    assert render({"a": ["{{ event.id }}", 1, {"b": "$.type"}]}) == {"a": ["evt_1", 1, {"b": "paid"}]}


def test_env_refs_are_read_at_render_and_collected_as_secrets() -> None:
    ctx = RenderContext({"event": EVENT}, {"TOKEN": "s3cret"})
    assert compile_value("Bearer ${TOKEN}", W).render(ctx) == "Bearer s3cret"
    assert compile_value("${URL:-http://x}/{{ event.id }}", W).render(ctx) == "http://x/evt_1"
    assert ctx.secrets == {"TOKEN": "s3cret"}  # defaults come from the flow file: not secrets


def test_missing_env_names_the_variable() -> None:
    with pytest.raises(MissingEnvError, match="NOPE"):
        render("${NOPE}")


@pytest.mark.parametrize("source", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ event.__init__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ 'a' * 100000000 }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ 9 ** 99999999 }}",
])
def test_sandbox_escapes_fail_with_template_error(source: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(source)
    assert str(info.value).startswith("f.yaml:7: steps[0].transform.x:")


def test_recursion_is_bounded() -> None:
    src = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"
    with pytest.raises(TemplateError, match="recursion"):
        render(src)


def test_immutable_sandbox_cannot_mutate_event() -> None:
    with pytest.raises(TemplateError):
        render("{{ event.items.append(1) }}")
    assert len(EVENT["items"]) == 2  # type: ignore[arg-type]


def test_strict_undefined_names_the_missing_key() -> None:
    with pytest.raises(TemplateError, match="nope"):
        render("{{ event.data.nope.deeper }}")


def test_syntax_errors_are_reported_at_compile_time_with_line() -> None:
    with pytest.raises(TemplateError, match=r"f.yaml:7: .*Jinja syntax error"):
        compile_value("{{ event.id ", W)
    with pytest.raises(TemplateError, match="invalid JSONPath"):
        compile_value("$.items[?(", W)


def test_expression_references_are_found() -> None:
    expr = compile_expression("steps.payment.amount > 0 and steps['crm'].response.status == 201", W)
    assert set(expr.refs) == {"payment", "crm"}


def test_keys_from_body_or_header() -> None:
    assert compile_key("$.id").extract(EVENT, {}) == "evt_1"
    assert compile_key("header:X-GitHub-Delivery").extract(EVENT, {"x-github-delivery": "d-1"}) == "d-1"
    assert compile_key("$.nope").extract(EVENT, {}) is None
    with pytest.raises(ValueError):
        compile_key("id")


def test_jsonpath_on_deep_and_huge_bodies() -> None:
    deep: dict[str, object] = {"v": 1}
    for _ in range(200):
        deep = {"a": deep}
    ctx = RenderContext({"event": deep})
    assert compile_value("$..v", W).render(ctx) == 1
    huge = {"items": [{"sku": str(i)} for i in range(50_000)]}
    ctx = RenderContext({"event": huge})
    assert len(compile_value("$.items[*].sku", W).render(ctx)) == 50_000  # type: ignore[arg-type]


def test_escaped_dollar_with_templates_and_env() -> None:
    assert render("$$5 for {{ event.id }}") == "$5 for evt_1"
    assert render("$$HOME ${T}", env={"T": "tok"}) == "$HOME tok"


def test_env_refs_inside_expressions() -> None:
    assert render("{{ ${T} | upper }}", env={"T": "tok"}) == "TOK"
    ctx = RenderContext({"event": EVENT}, {"KIND": "paid"})
    assert compile_expression("event.type == ${KIND}", W).render(ctx) is True
    with pytest.raises(TemplateError, match="inside a quoted string"):
        compile_expression('event.type == "${KIND}"', W)


# --- missing values: `default` and `is defined` see through missing parents, everything else fails -----


@pytest.mark.parametrize(("source", "expected"), [
    ("{{ event.repository.full_name | default('') }}", ""),
    ("{{ event.a.b.c | default('x') }}", "x"),
    ("{{ event.data.object.nope.deeper | default('x') }}", "x"),
    ("{{ event.items[5].sku | default('none') }}", "none"),
    ("{{ event.none_here.id | default(none) }}", None),
    ("{{ steps.skipped.response.json.id | default(none) }}", None),
    ("{{ event.a.b is defined }}", False),
    ("{{ event.a.b is undefined }}", True),
    ("{{ event.id is defined }}", True),
    ("{{ event.empty | default('e', true) }}", "e"),
    ("{{ event.a.b | default('e', true) }}", "e"),
    ("id={{ event.repository.full_name | default('-') }}", "id=-"),
])
def test_default_covers_missing_parents_of_any_depth(source: str, expected: object) -> None:
    assert render(source, event={**EVENT, "none_here": None, "empty": ""}, steps={"skipped": None}) == expected


@pytest.mark.parametrize("source", [
    "{{ event.repository.full_name }}",
    "text {{ event.repository.full_name }}",
    "{{ event.repository.full_name ~ '' }}",
    "{{ event.repository.id > 0 }}",
    "{{ event.repository.id == 1 }}",
    "{{ event.repository.id + 1 }}",
    "{{ event.repository | tojson }}",
    "{{ event.repository.name | length }}",
    "{{ [event.repository.full_name] }}",
    "{{ {'a': event.repository.full_name} }}",
    "{% if event.repository.private %}y{% endif %}",
    "{% for x in event.repository.topics %}{{ x }}{% endfor %}",
    "{{ event.repository.get('x') }}",
    "{{ event.repository | jsonpath('$.x') }}",
])
def test_any_other_use_of_a_missing_value_fails_naming_it(source: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(source)
    assert str(info.value) == "f.yaml:7: steps[0].transform.x: 'dict object' has no attribute 'repository'"


# --- block templates that spell a list or mapping give that value ------------------------------------------

LINES = ("[{% for item in event.items %}{\"description\": {{ item.sku | tojson }}, \"quantity\": {{ item.qty }}}"
         "{{ ',' if not loop.last }}{% endfor %}]")


def test_a_for_loop_building_json_lines_gives_a_list_of_dicts() -> None:
    assert render({"lines": LINES}) == {"lines": [{"description": "A", "quantity": 1},
                                                  {"description": "B", "quantity": 3}]}


def test_a_block_template_building_a_mapping_gives_a_dict() -> None:
    source = '{ {% for item in event.items %}"{{ item.sku }}": {{ item.qty }}{{ "," if not loop.last }}{% endfor %} }'
    assert render(source) == {"A": 1, "B": 3}


def test_python_reprs_of_items_are_read_as_literals() -> None:
    assert render("[{% for item in event.items %}{{ item }},{% endfor %}]") == EVENT["items"]


@pytest.mark.parametrize(("source", "expected"), [
    ("[{% for i in event.items %}{{ i.sku }}{% endfor %}]", "[AB]"),  # looks like a list, is not one
    ("{% if event.id %}[x]{% endif %}", "[x]"),
    ("{% if event.id %}{oops{% endif %}", "{oops"),
    ("[{{ event.amount }}]", "[2000]"),  # no {% %}: plain text templates stay strings
    ("{% for i in event.items %}{{ i.qty }}{% endfor %}", "13"),  # numbers stay text too
    ("{% if event.id %}[1] and [2]{% endif %}", "[1] and [2]"),
])
def test_other_block_template_text_stays_a_string(source: str, expected: str) -> None:
    assert render(source) == expected


# --- dry-run placeholders --------------------------------------------------------------------------------


def test_placeholders_compare_true_and_compute_placeholders() -> None:
    payment = Placeholder("response of payment")
    steps = {"payment": {"response": payment}}
    when = compile_expression("steps.payment.response.json.amount > 0 and steps.payment.response.status == 201", W)
    assert bool(when.render(RenderContext({"steps": steps})))
    assert bool(compile_expression("0 < steps.payment.response.json.amount", W).render(RenderContext({"steps": steps})))
    value = render("{{ steps.payment.response.json.amount / 100 + 1 }}", steps=steps)
    assert isinstance(value, Placeholder) and str(value) == "<response of payment.json.amount / 100 + 1>"
    assert render("total {{ -steps.payment.response.json.amount * 2 }}", steps=steps) == \
        "total <-response of payment.json.amount * 2>"
    assert render("{{ steps.payment.response.json.items | length }}", steps=steps) == 0


def test_a_dry_run_gets_past_conditions_on_a_response_it_did_not_receive() -> None:
    from engine import Event, RunStatus, load_flow, run_flow

    flow = load_flow("id: f\nsteps:\n  - id: pay\n    http: {url: 'https://pay.test/x', method: POST}\n"
                     "  - id: paid\n    filter: steps.pay.response.json.amount > 0\n"
                     "  - id: note\n    transform: {cents: '{{ steps.pay.response.json.amount * 100 }}'}\n", "f.yaml")
    result = run_flow(flow, Event(body={}), dry_run=True)
    assert result.status is RunStatus.SUCCEEDED, result.error
    assert str(result.steps[-1].output["cents"]) == "<response of pay.json.amount * 100>"
