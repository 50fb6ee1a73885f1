"""An agent's live state: the Redis key `hive:agent:<name>` its heartbeat refreshes
(agents/heartbeat.py) with a TTL of HIVE_AGENT_TIMEOUT, read by the API, the
dashboard and the reaper."""

import json

from django.conf import settings

from hive_core.redis_client import redis_client


def live_key(name: str) -> str:
    return f"hive:agent:{name}"


def agents_live(names: list[str]) -> dict[str, dict]:
    """The live heartbeat of each named agent that has one (one round trip)."""
    if not names:
        return {}
    values = redis_client().mget([live_key(n) for n in names])
    return {n: json.loads(v) for n, v in zip(names, values, strict=True) if v}


def live_write(name: str, state: dict) -> None:
    """Refresh agent `name`'s live state; it is gone HIVE_AGENT_TIMEOUT after the last."""
    redis_client().set(live_key(name), json.dumps(state), ex=settings.HIVE_AGENT_TIMEOUT)
