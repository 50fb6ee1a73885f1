"""Coordinators in standby: any number run, the one holding the leader lock leads.

Every `hive coordinator` consumes the coordinator queue (schedule firings, which are
idempotent per due time: commands.schedules.scheduled_fire), and checks the lock
every half reaper interval. Only the leader runs the beat (in a thread of its own)
and the leader-only passes (the reaper, the queued commands), each every
HIVE_REAPER_INTERVAL. A standby takes the lock the moment the server releases it: a
dead leader's session ends with its process, a cut or terminated one with its
connection, a hung one after the lock's idle timeout. A leader that finds its lock
gone stops leading at once: its passes and its beat check `leading()` before they
act (fencing), so a deposed leader's pass does nothing.

Each coordinator writes a record (name, host, pid, leading, since, term) into a Redis
hash every check, read by `hive coordinator --status` and the web's /readyz; each
change of leader is an event (`coordinator.leading`, `coordinator.standby`).
"""

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import redis
from django.conf import settings
from django.db import close_old_connections

from coordination.locks import leader_lock
from events.kinds import subject
from events.services import event_emit
from hive_core.redis_client import redis_client

logger = logging.getLogger(__name__)

STATUS_KEY = "hive:coordinators"
# Raised by each new leader: the larger term is the newer leader, should two records
# say "leading" for a moment (a deposed one that has not yet looked).
TERM_KEY = "hive:coordinators:term"
# A record not refreshed for this many of its checks belongs to a coordinator that is gone.
STALE_CHECKS = 4


class LeaderPasses:
    """The leader-only passes, registered by their apps' AppConfig.ready (coordination's
    reaper, commands' queued invocations): coordination cannot import commands."""

    def __init__(self):
        self._passes: list[tuple[str, Callable[[], object]]] = []

    def register(self, name: str, function: Callable[[], object]) -> None:
        if name not in dict(self._passes):
            self._passes.append((name, function))

    def __iter__(self):
        return iter(list(self._passes))


leader_passes = LeaderPasses()
_current: "Coordinator | None" = None


def leading(*, verify: bool = False) -> bool:
    """Whether this process is the leading coordinator: its last look at the lock found
    it held (at most half a reaper interval ago), and with `verify` the lock's server
    says so now (the fencing check of a pass or a firing, just before it acts). False
    in every other process: a beat started by hand sends nothing."""
    if _current is None or not _current.leading.is_set():
        return False
    return _current.lock.held() if verify else True


def current() -> "Coordinator | None":
    return _current


class Coordinator:
    """This process's part in the election: its lock, its record, its beat and passes."""

    def __init__(self, *, name: str, interval: float, beat: Callable[[], object] | None = None):
        self.name = name
        self.interval = interval
        self.check_every = interval / 2
        # A leader silent for this long loses its lock (locks.PostgresLock): it checks
        # in every half interval, so it takes 6 missed looks, or a hung process.
        self.lock = leader_lock(timeout=max(5.0, 3 * interval))
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.key = f"{self.host}:{self.pid}"
        self.leading = threading.Event()
        self.since: datetime | None = None
        self.term: int | None = None
        # Its own client with short timeouts: a paused Redis must not hold up the looks
        # at the lock (a leader that misses them loses the lock).
        self._redis = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=self.check_every, decode_responses=True,
            socket_connect_timeout=self.check_every,
        )  # fmt: skip
        self._beat_factory = beat
        self._beat = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        global _current
        _current = self
        for target, what in ((self._check_loop, "lock"), (self._pass_loop, "passes")):
            thread = threading.Thread(target=target, name=f"coordinator-{what}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """A clean stop hands over at once: the lock is released, not left to time out."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=self.interval * 2 + 5)
        if self.leading.is_set():
            self._step_down("stopped")
        self.lock.release()
        try:
            self._redis.hdel(STATUS_KEY, self.key)
        except Exception as exc:
            logger.warning("coordinator: record not removed: %s", exc)

    def check(self) -> str | None:
        """One look at the lock: "leading" if this process just took it, "standby" if it
        just found it gone, None if nothing changed."""
        if self.leading.is_set():
            if self.lock.held():
                return None
            self._step_down("lost the leader lock")
            return "standby"
        if not self.lock.try_acquire():
            return None
        try:
            self.term = int(self._redis.incr(TERM_KEY))
        except Exception as exc:  # the term only orders records; leading needs the lock
            logger.warning("coordinator: no term from Redis: %s", exc)
            self.term = 0
        self.since = datetime.now(UTC)
        self.leading.set()
        logger.warning("coordinator %s leads (term %s)", self.name, self.term)
        self._emit("leading", term=self.term)
        if self._beat_factory is not None:
            self._beat = self._beat_factory()
            self._beat.start()
        return "leading"

    def _step_down(self, why: str) -> None:
        # First, so a pass or a firing about to start sees it (they check leading()).
        self.leading.clear()
        beat, self._beat = self._beat, None
        if beat is not None:
            beat.service.stop()  # its loop ends within a second; it sends nothing meanwhile
        logger.warning("coordinator %s stops leading: %s", self.name, why)
        self._emit("standby", term=self.term, reason=why)
        self.since = None

    def _emit(self, what: str, **data) -> None:
        try:
            event_emit(
                kind=f"coordinator.{what}",
                subject=subject("coordinator", self.name),
                data={"host": self.host, "pid": self.pid, **data},
            )
        except Exception as exc:  # the database may be what deposed it
            logger.warning("coordinator: event %s not recorded: %s", what, exc)
            close_old_connections()

    def record(self) -> dict:
        return {
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "leading": self.leading.is_set(),
            "since": self.since.isoformat() if self.since else None,
            "term": self.term,
            "every": self.check_every,
            "seen": time.time(),
        }

    def _check_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.check()
            except Exception:
                logger.exception("coordinator: leadership check failed")
            try:
                self._redis.hset(STATUS_KEY, self.key, json.dumps(self.record()))
            except Exception as exc:
                logger.warning("coordinator: record not written: %s", exc)
            self._stopping.wait(self.check_every)

    def _pass_loop(self) -> None:
        while not self._stopping.wait(self.interval):
            for name, function in leader_passes:
                # Fencing: a leader deposed since the last pass (or during this one)
                # runs nothing more; asked of the lock's server, as a leader resumed
                # after a pause has not yet looked.
                if self._stopping.is_set() or not leading(verify=True):
                    break
                try:
                    function()
                except Exception:
                    # One failed pass must not stop the next; the database may be away.
                    logger.exception("coordinator: the %s pass failed", name)
                finally:
                    close_old_connections()


def coordinators_status() -> list[dict]:
    """Every coordinator's record, the leader first, each with `alive` (refreshed within
    a few of its checks); records of coordinators gone for long are dropped."""
    client = redis_client()
    now = time.time()
    records = []
    for key, raw in client.hgetall(STATUS_KEY).items():
        try:
            record = json.loads(raw)
            age = now - float(record["seen"])
            every = float(record.get("every") or 1)
        except (ValueError, KeyError, TypeError):
            client.hdel(STATUS_KEY, key)
            continue
        if age > every * STALE_CHECKS * 10 + 60:
            client.hdel(STATUS_KEY, key)  # long gone (killed: it could not remove it)
            continue
        record["alive"] = age <= every * STALE_CHECKS + 1
        records.append(record)
    leader = coordinator_leader(records)
    records.sort(key=lambda r: (r is not leader, not r["alive"], r["name"], r["pid"]))
    return records


def coordinator_leader(records: list[dict]) -> dict | None:
    """The leading coordinator among `records`: alive and leading, the newest term if
    a deposed one has not yet noticed."""
    leaders = [r for r in records if r["alive"] and r["leading"]]
    return max(leaders, key=lambda r: r.get("term") or 0, default=None)
