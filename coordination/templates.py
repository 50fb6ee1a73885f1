"""Step inputs, conditions and foreach lists are templates over `params`,
`steps.<id>.output` and `item`, rendered by Jinja2's sandbox, never `eval`.

A string that is one `{{ expression }}` and nothing else renders to the
expression's value (a list stays a list); any other string renders to text.
Whatever goes wrong while rendering is a TemplateError: an undefined name, an
error in the expression (`1 / 0`), or a value that is not JSON data.
"""

import math
import re
from collections.abc import Mapping
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.sandbox import SandboxedEnvironment

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_WHOLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)

__all__ = ["TemplateError", "evaluate", "render", "template_check", "template_steps"]


@lru_cache(maxsize=4096)
def _expression(source: str):
    return _ENV.compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _template(source: str):
    return _ENV.from_string(source)


def _expression_of(text: str) -> str | None:
    match = _WHOLE.match(text)
    return match.group("expr") if match else None


# What an expression can raise on data it did not expect (a division by zero, a
# comparison of a number with text), and Jinja's code for a constant it folded to
# infinity (`1e308 * 10`, a NameError); anything else is not the template's doing.
_RUNTIME_ERRORS = (
    ArithmeticError, AttributeError, LookupError, NameError, TypeError, ValueError,
)  # fmt: skip


def render(value: object, context: dict) -> object:
    """Render every string inside `value` (dicts and lists are walked) to JSON data."""
    if isinstance(value, str):
        if "{" not in value:
            return value
        expression = _expression_of(value)
        try:
            if expression is not None:
                return _json_data(_expression(expression)(**context))
            return _template(value).render(context)
        except _RUNTIME_ERRORS as exc:
            raise TemplateError(f"{type(exc).__name__}: {exc}") from exc
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def evaluate(condition: str, context: dict) -> bool:
    """A `when` condition, with or without the braces: `params.env == 'prod'`."""
    try:
        # bool() inside: an undefined name fails only when its truth is asked.
        return bool(_expression(_expression_of(condition) or condition)(**context))
    except _RUNTIME_ERRORS as exc:
        raise TemplateError(f"{type(exc).__name__}: {exc}") from exc


def _json_data(value: object) -> object:
    """An expression's value as JSON data. Jinja returns whatever the expression
    made: an undefined name (StrictUndefined fails only when used), a tuple, a
    range, a method; a step's inputs and a foreach's items are stored as JSON."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TemplateError(f"{value} is not a JSON number")
        return value
    if isinstance(value, list | tuple | range):
        return [_json_data(item) for item in value]
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TemplateError("a mapping's keys must be strings to be JSON data")
        return {key: _json_data(item) for key, item in value.items()}
    if callable(value):
        # `params.items` finds the dict's method before its key.
        hint = " (for a key of that name, write ['name'])"
    else:
        hint = " (add `| list`)" if hasattr(value, "__next__") else ""
    raise TemplateError(f"the value is a {type(value).__name__}, not JSON data{hint}")


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


def template_steps(value: object, *, condition: bool = False) -> set[str]:
    """The step ids the templates in `value` read as `steps.<id>` or `steps['<id>']`
    (`value` compiles: see template_check)."""
    if isinstance(value, dict):
        return set().union(*(template_steps(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(template_steps(item) for item in value))
    if not isinstance(value, str) or not value or (not condition and "{" not in value):
        return set()
    source = value if not condition or _expression_of(value) else f"{{{{ {value} }}}}"
    found = set()
    for node in _ENV.parse(source).find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node.node, nodes.Name) and node.node.name == "steps":
            if isinstance(node, nodes.Getattr):
                found.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                found.add(node.arg.value)
    return found
