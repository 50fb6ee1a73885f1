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
    from hive_core.redis_client import redis_client

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


# --- message handlers (skill modules may register them too) ---------------------------

from agents.handlers import HandlerError, handler  # noqa: E402


@handler("test.record")
def record(ctx, message) -> dict:
    """Record the handling as a row in the handler's transaction: exactly-once proof.
    Takes `ms` milliseconds first when the payload says so (messages in hand longer)."""
    import time

    from events.models import Event

    if isinstance(message.payload, dict) and message.payload.get("ms"):
        time.sleep(message.payload["ms"] / 1000)

    Event.objects.create(
        kind="test.handled",
        subject=f"message:{message.id}",
        data={"agent": ctx.agent, "consumer": ctx.consumer, "deliveries": message.deliveries},
    )
    return {"recorded": message.id}


@handler("test.poison")
def poison(ctx, message) -> None:
    """Fail on every delivery, after recording the attempt (outside the transaction)."""
    from hive_core.redis_client import redis_client

    redis_client().incr(f"test:poison:{message.id}")
    raise HandlerError(f"poisoned message {message.id}")


@handler("test.slow")
def slow(ctx, message) -> dict:
    """Take `seconds` to handle."""
    import time

    time.sleep(message.payload.get("seconds", 1))
    return {"slept": message.payload.get("seconds", 1)}


@handler("test.crash_once")
def crash_once(ctx, message) -> dict:
    """Kill the agent process on the first delivery (mid-transaction), then succeed."""
    import os
    import signal

    if message.deliveries == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"deliveries": message.deliveries}


@handler("test.crash")
def crash_always(ctx, message) -> None:
    """Kill the agent process on every delivery: a poison message."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
