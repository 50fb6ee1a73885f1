"""Step inputs, conditions and foreach lists are templates over `params`,
`steps.<id>.output` and `item`, rendered by Jinja2's sandbox, never `eval`.

A string that is one `{{ expression }}` and nothing else renders to the
expression's value (a list stays a list); any other string renders to text.
"""

import re
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_WHOLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)

__all__ = ["TemplateError", "evaluate", "render", "template_check"]


@lru_cache(maxsize=4096)
def _expression(source: str):
    return _ENV.compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _template(source: str):
    return _ENV.from_string(source)


def _expression_of(text: str) -> str | None:
    match = _WHOLE.match(text)
    return match.group("expr") if match else None


def render(value: object, context: dict) -> object:
    """Render every string inside `value` (dicts and lists are walked)."""
    if isinstance(value, str):
        if "{" not in value:
            return value
        expression = _expression_of(value)
        if expression is not None:
            return _expression(expression)(**context)
        return _template(value).render(context)
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def evaluate(condition: str, context: dict) -> object:
    """A `when` condition, with or without the braces: `params.env == 'prod'`."""
    return _expression(_expression_of(condition) or condition)(**context)


def template_check(value: object, *, condition: bool = False) -> None:
    """Compile every template in `value`; raises TemplateError on bad syntax."""
    if isinstance(value, str):
        if condition and value:
            _expression(_expression_of(value) or value)
        elif "{" in value:
            expression = _expression_of(value)
            _expression(expression) if expression is not None else _template(value)
    elif isinstance(value, dict):
        for item in value.values():
            template_check(item)
    elif isinstance(value, list):
        for item in value:
            template_check(item)
