import time

from agents.skills.registry import ANY_OBJECT, SkillContext, skill


@skill("noop", params=ANY_OBJECT)
def noop(ctx: SkillContext, **inputs) -> dict:
    """Return the inputs unchanged: the cheapest real step, for tests and benchmarks."""
    return inputs


@skill(
    "sleep",
    params={
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 86400}},
        "required": ["seconds"],
        "additionalProperties": False,
    },
)
def sleep(ctx: SkillContext, *, seconds: float) -> dict:
    """Wait `seconds`: a timer step (a cool-down between deploy stages, say)."""
    time.sleep(seconds)
    return {"slept": seconds}
