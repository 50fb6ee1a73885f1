"""What an agent is: its name and role (a slug), its skills and its concurrency, with
the rules the pool file, `hive agent`, the admin and the API all apply. Below the
models and imported before Django is set up (agents/worker.py), so it reads only
settings.
"""

from dataclasses import dataclass

from django.conf import settings

# An agent's name and role: a lowercase slug. `hive agent`, the pool file, the admin
# (the model's validator) and the API schema all hold this one pattern, so an admin
# cannot rename an agent to a name its own process would refuse, or that the API's
# schema says cannot exist. `\Z`: `$` would let a trailing newline through (the
# schema publishes it as ECMA's `$`, which drf-spectacular writes for `\Z`).
AGENT_SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]*\Z"


@dataclass(frozen=True)
class AgentSpec:
    name: str
    role: str
    skills: tuple[str, ...]
    concurrency: int = 1


def concurrency_bound() -> str:
    """The bound on an agent's concurrency, as every refusal words it."""
    bound = settings.HIVE_AGENT_MAX_CONCURRENCY
    return f"must be at most {bound} (HIVE_AGENT_MAX_CONCURRENCY, steps one agent runs at once)"


def concurrency_problem(value: object) -> str:
    """Why `value` cannot be an agent's concurrency ("" when it can): the one rule of
    the pool file, `hive agent`, the API's scale and the admin."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return f"{value!r} is not a positive integer"
    if value > settings.HIVE_AGENT_MAX_CONCURRENCY:
        return f"{value} {concurrency_bound()}"
    return ""
