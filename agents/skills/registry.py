"""The skill registry: `@skill("name", params=<JSON Schema>)` registers a callable.

A skill is called as `func(ctx, **inputs)` after its inputs are validated
against its schema. It returns something JSON can hold, or raises SkillError.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError

from hive_core.jsondata import SchemaValidator

ANY_OBJECT: dict = {"type": "object"}


class SkillError(Exception):
    """A skill failed. `retryable` says whether running it again may succeed."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class SkillInputError(SkillError):
    """The inputs break the skill's schema or rules: running it again cannot help."""

    def __init__(self, message: str):
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class SkillContext:
    """What the engine tells a skill about the call."""

    agent: str = ""
    # `run:step:attempt` for a step of a run; skills with outside effects pass it on.
    idempotency_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skill:
    name: str
    func: Callable[..., Any]
    params: dict
    description: str
    validator: Draft202012Validator

    def validate(self, inputs: object) -> None:
        """Raise SkillInputError naming the first offending field, if any."""
        problem = schema_problem(self.validator, inputs, at="inputs")
        if problem:
            raise SkillInputError(f"{self.name}: {problem}")


def schema_problem(validator: Draft202012Validator, instance: object, *, at: str) -> str | None:
    """The first schema violation as `at.field.path: message`, or None if valid."""
    errors = sorted(
        validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if not errors:
        return None
    path = ".".join(str(p) for p in errors[0].absolute_path)
    return f"{at}.{path}: {errors[0].message}" if path else f"{at}: {errors[0].message}"


_REGISTRY: dict[str, Skill] = {}


def skill(name: str, *, params: dict | None = None, description: str = ""):
    """Register the decorated function as skill `name`; its schema is checked now."""
    schema = params if params is not None else ANY_OBJECT
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"skill {name!r}: invalid params schema: {exc.message}") from None

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        existing = _REGISTRY.get(name)
        if existing and existing.func is not func:
            raise ValueError(f"skill {name!r} is already registered by {existing.func.__module__}")
        _REGISTRY[name] = Skill(
            name=name,
            func=func,
            params=schema,
            description=description or (func.__doc__ or "").strip().split("\n")[0],
            validator=SchemaValidator(schema, format_checker=FormatChecker()),
        )
        return func

    return register


def skills_load(modules: list[str]) -> None:
    """Import the built-in skills and the modules named by HIVE_SKILL_MODULES."""
    for module in ["agents.skills.builtin", *modules]:
        importlib.import_module(module)


def skill_names() -> list[str]:
    return sorted(_REGISTRY)


def skill_get(name: str) -> Skill:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SkillInputError(f"unknown skill {name!r}") from None


def skill_execute(name: str, inputs: dict, *, context: SkillContext) -> Any:
    """Validate `inputs` against skill `name`'s schema, then run it."""
    target = skill_get(name)
    target.validate(inputs)
    return target.func(context, **inputs)
