"""Agent heartbeats: a Redis key with a TTL on every beat, the database only on change.

Every beat refreshes `hive:agent:<name>` (status, load, time) with a TTL of
HIVE_AGENT_TIMEOUT (agents/liveness.py). The row is written when status, load or
concurrency change, and otherwise every HIVE_AGENT_TIMEOUT / 2, so it never looks
dead while the agent lives even if Redis is wiped. The reaper marks an agent
offline only when both are silent.
"""

import time

from django.conf import settings
from django.utils import timezone

from agents.liveness import live_write
from agents.services import agent_write_through


class Heartbeat:
    """The heartbeat of one agent process; `beat` is called by its worker's timer."""

    def __init__(self, *, name: str, pid: int):
        self.name = name
        self.pid = pid
        self._written: tuple | None = None
        self._written_at = 0.0

    def beat(self, *, status: str, running: int, concurrency: int) -> bool:
        """Record one beat; returns False if another process has taken the agent's name."""
        load = round(running / concurrency, 3) if concurrency else 0.0
        now = timezone.now()
        state = {"pid": self.pid, "status": status, "running": running,
                 "concurrency": concurrency, "load": load, "at": now.isoformat()}  # fmt: skip
        live_write(self.name, state)
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
