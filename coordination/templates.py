"""Step inputs, conditions and foreach lists are templates over `params`,
`steps.<id>.output` and `item`, rendered by Jinja2's sandbox, never `eval`.

A string that is one `{{ expression }}` and nothing else renders to the
expression's value (a list stays a list); any other string renders to text.
Whatever goes wrong while rendering is a TemplateError: an undefined name, an
error in the expression (`1 / 0`), or a value that is not JSON data.
"""

import math
import re
import threading
import time
from collections.abc import Mapping, Sized
from functools import lru_cache

from django.conf import settings
from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.sandbox import SandboxedEnvironment, safe_range


class _BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, with every way a template builds a long value bounded: `'a' * 10**8`
    and `[0] * 10**7` were built in full (in the web process, for a dry run's `when`
    or an overlap key), and `9 ** 9 ** 9` never ended. Sizes are checked before the
    operation where it can be known (`*`, `**`, `+`, str methods and filters taking a
    width), and every value an operation returns is checked after; loops over `range`
    and rendered text check the render's deadline as they go."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def call_binop(self, context, operator, left, right):
        limit = _max_length()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    _check_length(len(seq) * max(times, 0), limit)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            # The result's bits, roughly; a float power overflows by itself.
            if abs(left) > 1 and right > 0 and right * abs(left).bit_length() > limit:
                raise TemplateError(f"a number longer than {limit} bits (HIVE_TEMPLATE_MAX_LENGTH)")
        elif operator == "+" and isinstance(left, Sized) and isinstance(right, Sized):
            _check_length(len(left) + len(right), limit)
        elif operator == "%" and isinstance(left, str):
            for width in re.findall(r"%[-+ #0]*(\d+)?(?:\.(\d+))?", left):
                _check_length(max(int(w) for w in width if w) if any(width) else 0, limit)
        _deadline_check()
        return _checked(super().call_binop(context, operator, left, right))

    def call(self, __context, __obj, *args, **kwargs):
        _deadline_check()
        # `'a'.ljust(10**8)`, `'{:>100000000}'.format(1)`: widths are lengths too.
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool):
                _check_length(value, _max_length())
        if isinstance(__obj, str) or getattr(__obj, "__self__", None).__class__ is str:
            for value in args:
                if isinstance(value, str):
                    for width in re.findall(r"\d+", value):
                        _check_length(int(width), _max_length())
        return _checked(super().call(__context, __obj, *args, **kwargs))


def _bounded_filter(function):
    def bounded(*args, **kwargs):
        _deadline_check()
        # `'a' | center(10**8)`, `'a' | indent(10**8)`: a number argument is a width.
        for value in (*args[1:], *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool):
                _check_length(value, _max_length())
        return _checked(function(*args, **kwargs))

    for attribute in ("jinja_pass_arg",):
        if hasattr(function, attribute):
            setattr(bounded, attribute, getattr(function, attribute))
    return bounded


class _Range:
    """The sandbox's `range` (at most MAX_RANGE numbers), checking the render's deadline
    at every number: nested loops over ranges are the template's way to spin."""

    def __init__(self, *args):
        self.range = safe_range(*args)

    def __len__(self) -> int:
        return len(self.range)

    def __iter__(self):
        for number in self.range:
            _deadline_check()
            yield number


def _environment(**options) -> _BoundedEnvironment:
    env = _BoundedEnvironment(undefined=StrictUndefined, autoescape=False, **options)
    env.filters = {name: _bounded_filter(f) for name, f in env.filters.items()}
    env.globals["range"] = _Range
    return env


def _each_value(value: object) -> object:
    return _each.func(value)


_ENV = _environment()
# Text whose every `{{ expression }}` goes through the caller's function (`render_each`).
_EACH_ENV = _environment(finalize=_each_value)
_each = threading.local()

_deadline = threading.local()


def _max_length() -> int:
    return settings.HIVE_TEMPLATE_MAX_LENGTH


def _check_length(length: int, limit: int) -> None:
    if length > limit:
        raise TemplateError(f"a value longer than {limit} (HIVE_TEMPLATE_MAX_LENGTH)")


def _checked(value: object) -> object:
    if isinstance(value, str | list | tuple | dict | bytes):
        _check_length(len(value), _max_length())
    return value


def _deadline_check() -> None:
    deadline = getattr(_deadline, "at", None)
    if deadline is not None and time.monotonic() > deadline:
        limit = settings.HIVE_TEMPLATE_TIMEOUT
        raise TemplateError(f"took longer than {limit} s (HIVE_TEMPLATE_TIMEOUT)")


class _Deadline:
    """The time a render (and everything it renders inside) must end by."""

    def __enter__(self):
        self.outer = getattr(_deadline, "at", None)
        if self.outer is None:
            _deadline.at = time.monotonic() + settings.HIVE_TEMPLATE_TIMEOUT
        return self

    def __exit__(self, *exc):
        _deadline.at = self.outer


_WHOLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)

__all__ = [
    "TemplateError", "evaluate", "render", "render_each", "template_check", "template_steps",
]  # fmt: skip


@lru_cache(maxsize=4096)
def _expression(source: str):
    return _ENV.compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _template(source: str):
    return _ENV.from_string(source)


@lru_cache(maxsize=256)
def _each_template(source: str):
    return _EACH_ENV.from_string(source)


def render_each(source: str, context: dict, *, each) -> str:
    """`source` rendered to text with the value of every `{{ expression }}` passed
    through `each(value) -> str` first: a webhook's command quotes each value it reads
    from the body as one token, so a value cannot add arguments of its own."""
    _each.func = each
    try:
        with _Deadline():
            return _text(_each_template(source), context)
    except _RUNTIME_ERRORS as exc:
        raise TemplateError(f"{type(exc).__name__}: {exc}") from exc


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
            with _Deadline():
                if expression is not None:
                    return _json_data(_expression(expression)(**context))
                return _text(_template(value), context)
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
        with _Deadline():
            return bool(_expression(_expression_of(condition) or condition)(**context))
    except _RUNTIME_ERRORS as exc:
        raise TemplateError(f"{type(exc).__name__}: {exc}") from exc


def _text(template, context: dict) -> str:
    """A text template rendered chunk by chunk, so a loop that writes more than the
    bound, or for longer than the deadline, stops there."""
    chunks, length, limit = [], 0, _max_length()
    for chunk in template.generate(context):
        length += len(chunk)
        _check_length(length, limit)
        _deadline_check()
        chunks.append(chunk)
    return "".join(chunks)


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
    if isinstance(value, _Range):
        value = value.range
    if isinstance(value, list | tuple | range):
        _check_length(len(value), _max_length())
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
