"""A skill module outside Hive, loaded through HIVE_SKILL_MODULES as a user's would be."""

from agents.skills import skill


@skill(
    "test.upper",
    params={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
)
def upper(ctx, *, text: str) -> dict:
    """Upper-case a text."""
    return {"text": text.upper()}


@skill(
    "test.flaky",
    params={
        "type": "object",
        "properties": {"key": {"type": "string"}, "failures": {"type": "integer"}},
        "required": ["key", "failures"],
    },
)
def flaky(ctx, *, key: str, failures: int) -> dict:
    """Fail the first `failures` tries (counted in Redis), then succeed."""
    from agents.skills import SkillError
    from hive_project.redis_client import redis_client

    tries = redis_client().incr(f"test:flaky:{key}")
    if tries <= failures:
        raise SkillError(f"flaky failure {tries} of {failures}")
    return {"tries": tries}


@skill("test.fail", params={"type": "object"})
def fail(ctx, **inputs) -> dict:
    """Always fail, for good."""
    from agents.skills import SkillError

    raise SkillError("this step always fails", retryable=False)


@skill("test.crash", params={"type": "object"})
def crash(ctx, **inputs) -> dict:
    """Kill the pool process running it: a poison step."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


@skill("test.unjsonable", params={"type": "object"})
def unjsonable(ctx, **inputs) -> dict:
    """Return something JSON cannot hold."""
    return {"tags": {"a", "b"}}
