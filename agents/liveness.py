"""Agent heartbeats: a Redis key with a TTL on every beat, the database only on change.

Every beat refreshes `hive:agent:<name>` (status, load, time) with a TTL of
HIVE_AGENT_TIMEOUT. The row is written when status, load or concurrency change,
and otherwise every HIVE_AGENT_TIMEOUT / 2, so it never looks dead while the
agent lives even if Redis is wiped. The reaper marks an agent offline only when
both are silent.
"""

import json
import time

from django.conf import settings
from django.utils import timezone

from hive_core.redis_client import redis_client


def live_key(name: str) -> str:
    return f"hive:agent:{name}"


def agents_live(names: list[str]) -> dict[str, dict]:
    """The live heartbeat of each named agent that has one (one round trip)."""
    if not names:
        return {}
    values = redis_client().mget([live_key(n) for n in names])
    return {n: json.loads(v) for n, v in zip(names, values, strict=True) if v}


class Heartbeat:
    """The heartbeat of one agent process; `beat` is called by its worker's timer."""

    def __init__(self, *, name: str, pid: int):
        self.name = name
        self.pid = pid
        self._written: tuple | None = None
        self._written_at = 0.0

    def beat(self, *, status: str, running: int, concurrency: int) -> bool:
        """Record one beat; returns False if another process has taken the agent's name."""
        from agents.services import agent_write_through

        load = round(running / concurrency, 3) if concurrency else 0.0
        now = timezone.now()
        state = {"pid": self.pid, "status": status, "running": running,
                 "concurrency": concurrency, "load": load, "at": now.isoformat()}  # fmt: skip
        redis_client().set(live_key(self.name), json.dumps(state), ex=settings.HIVE_AGENT_TIMEOUT)
        snapshot = (status, load, concurrency)
        stale = time.monotonic() - self._written_at > settings.HIVE_AGENT_TIMEOUT / 2
        if snapshot == self._written and not stale:
            return True
        owned = agent_write_through(
            name=self.name, pid=self.pid, status=status, load=load,
            concurrency=concurrency, at=now,
        )  # fmt: skip
        self._written, self._written_at = snapshot, time.monotonic()
        return owned
