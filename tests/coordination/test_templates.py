"""Templates render to JSON data or raise TemplateError, whatever the expression does."""

import pytest

from coordination.templates import TemplateError, evaluate, render

CONTEXT = {"params": {"n": 0, "items": [1, 2], "x": 2}, "steps": {}, "item": None}


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("{{ params.missing }}", "has no attribute 'missing'"),
        ("{{ [1, params.missing] }}", "has no attribute 'missing'"),
        ("{{ 1 / params.n }}", "ZeroDivisionError: division by zero"),
        ("total: {{ 1 / params.n }}", "ZeroDivisionError: division by zero"),
        ("{{ params.x > 'a' }}", "TypeError: '>' not supported"),
        ("{{ params.items }}", "builtin_function_or_method, not JSON data (for a key"),
        ("{{ params['items'] | map('string') }}", "generator, not JSON data (add `| list`)"),
        ("{{ params.x * 1e308 }}", "inf is not a JSON number"),
        ("{{ 1e308 * 10 }}", "inf is not a JSON number"),  # not folded: `*` is checked
        ("{{ {1: 'a'} }}", "keys must be strings"),
    ],
)
def test_what_cannot_render_to_json_data_is_a_template_error(template, error):
    with pytest.raises(TemplateError, match=error.replace("(", r"\(").replace(")", r"\)")):
        render({"with": [template]}, CONTEXT)


def test_an_expression_renders_to_json_data():
    rendered = render(
        {"a": "{{ range(3) }}", "b": "{{ (1, 'x') }}", "c": "{{ params['items'] }}"}, CONTEXT
    )
    assert rendered == {"a": [0, 1, 2], "b": [1, "x"], "c": [1, 2]}


@pytest.mark.parametrize("condition", ["params.missing", "1 / params.n", "params.x > 'a'"])
def test_a_condition_that_cannot_be_decided_is_a_template_error(condition):
    with pytest.raises(TemplateError):
        evaluate(condition, CONTEXT)


def test_a_condition_is_true_or_false():
    assert evaluate("params['items']", CONTEXT) is True
    assert evaluate("{{ params.n }}", CONTEXT) is False
